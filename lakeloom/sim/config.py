"""The simulator's settings: one typed model that is also the source of its command-line flags.

Every field becomes a ``lakeloom sim --field-name`` flag (see ``lakeloom.sim.cli``), so the CLI,
the in-process starter and the test fixture can never drift apart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MODELS = "gpt-4o-mini,gpt-4o,text-embedding-3-small,sim-chat,sim-embed"


class SimConfig(BaseModel):
    """How the simulated provider behaves: limits, faults, latency, model surface.

    Examples:
        >>> SimConfig(rpm=600, tpm=200_000).request_capacity
        10.0
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to bind (keep 127.0.0.1 in tests).")
    port: int = Field(8377, ge=0, le=65535, description="TCP port; 0 picks a free one.")
    rpm: float = Field(0, ge=0, description="Requests per minute; 0 = unlimited.")
    tpm: float = Field(
        0, ge=0, description="Tokens per minute (prompt + max_tokens); 0 = unlimited."
    )
    burst_s: float = Field(
        1.0,
        gt=0,
        le=60,
        description="Bucket capacity in seconds of refill (capacity = limit * burst_s / 60).",
    )
    count_rejected: bool = Field(
        True, description="A request rejected by the limit still spends one request slot."
    )
    fail_429: float = Field(0, ge=0, le=1, description="Rate of injected 429 responses.")
    fail_5xx: float = Field(0, ge=0, le=1, description="Rate of injected 500/503 responses.")
    timeout_rate: float = Field(0, ge=0, le=1, description="Rate of requests that hang.")
    malformed_rate: float = Field(
        0, ge=0, le=1, description="Rate of chat replies with broken or schema-violating JSON."
    )
    hang_s: float = Field(30.0, ge=0, description="How long a 'timeout' request hangs.")
    retry_after_429_s: float = Field(1.0, ge=0, description="Retry-After sent with injected 429s.")
    latency_ms: str = Field(
        "0",
        description="Latency: '50' fixed, '20-80' uniform, 'lognormal:P50:P95' (ms).",
    )
    seed: int = Field(0, description="Seed of the fault RNG and of every generated payload.")
    embedding_dim: int = Field(384, ge=1, le=8192, description="Native embedding dimension.")
    context_window: int = Field(
        128_000, ge=1, description="Prompt + max_tokens above this is a 400 error."
    )
    default_max_tokens: int = Field(
        0, ge=0, description="Tokens counted for a chat request that sets no max_tokens."
    )
    models: str = Field(DEFAULT_MODELS, description="Comma-separated ids listed by /v1/models.")
    api_key: str | None = Field(
        None, description="Require 'Authorization: Bearer KEY' (also LAKELOOM_SIM_API_KEY)."
    )
    batch_delay_s: float = Field(
        2.0, ge=0, description="Batch API: seconds a batch stays in_progress before it ends."
    )
    batch_fail_rate: float = Field(
        0, ge=0, le=1, description="Batch API: share of lines failing (HTTP 500 in the error file)."
    )
    batch_expire_rate: float = Field(
        0, ge=0, le=1, description="Batch API: share of batches that expire half done."
    )
    batch_reject_rate: float = Field(
        0, ge=0, le=1, description="Batch API: share of batches that fail validation as a whole."
    )
    batch_max_requests: int = Field(
        50_000, ge=1, description="Batch API: most requests in one batch (more: batch fails)."
    )
    batch_max_bytes: int = Field(
        200 * 1024**2, ge=1, description="Batch API: largest input file accepted, in bytes."
    )
    batch_download_failures: int = Field(
        0,
        ge=0,
        description="Batch API: the first N downloads of a batch's output or error file answer "
        "HTTP 500 (the file stays; a later download gets it).",
    )
    batch_cancel_failures: int = Field(
        0,
        ge=0,
        description="Batch API: the first N cancel calls answer HTTP 500 and leave the batch "
        "running.",
    )
    batch_create_failures: int = Field(
        0,
        ge=0,
        description="Batch API: the first N batch creations answer HTTP 500 although the batch "
        "was created (it runs and bills: the client must find it, not create another).",
    )
    batch_cancel_share: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Batch API: share of lines a cancelled batch has answered (default: in "
        "proportion to the time it ran; set it for tests that must not depend on timing).",
    )
    batch_fault_drop: bool = Field(
        False,
        description="Batch API: the injected download/cancel/create failures drop the "
        "connection instead of answering HTTP 500.",
    )

    @field_validator("latency_ms")
    @classmethod
    def _check_latency(cls, value: str) -> str:
        LatencySpec.parse(value)
        return value

    @property
    def request_capacity(self) -> float:
        """Request bucket size (how many requests may arrive at once after an idle spell)."""
        return self.rpm * self.burst_s / 60.0

    @property
    def token_capacity(self) -> float:
        """Token bucket size."""
        return self.tpm * self.burst_s / 60.0

    @property
    def model_ids(self) -> list[str]:
        """The ids listed by ``GET /v1/models``."""
        return [m.strip() for m in self.models.split(",") if m.strip()]


@dataclass(frozen=True, slots=True)
class LatencySpec:
    """A latency distribution in milliseconds: fixed, uniform or lognormal (from p50/p95)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> LatencySpec:
        """Parse ``'50'``, ``'20-80'``, ``'uniform:20:80'`` or ``'lognormal:50:200'``."""
        raw = text.strip().lower()
        try:
            if raw.startswith("lognormal:"):
                p50, p95 = (float(x) for x in raw.split(":")[1:3])
                if not 0 < p50 <= p95:
                    raise ValueError("needs 0 < p50 <= p95")
                return cls("lognormal", p50, p95)
            if raw.startswith("uniform:"):
                lo, hi = (float(x) for x in raw.split(":")[1:3])
                return cls._uniform(lo, hi)
            if "-" in raw.lstrip("-"):
                lo, hi = (float(x) for x in raw.split("-", 1))
                return cls._uniform(lo, hi)
            value = float(raw.removeprefix("fixed:"))
            if value < 0:
                raise ValueError("negative latency")
            return cls("fixed", value)
        except ValueError as exc:
            raise ValueError(
                f"latency_ms={text!r}: expected '50', '20-80', 'uniform:20:80' or "
                f"'lognormal:P50:P95' in milliseconds ({exc})"
            ) from None

    @classmethod
    def _uniform(cls, lo: float, hi: float) -> LatencySpec:
        if not 0 <= lo <= hi:
            raise ValueError("needs 0 <= low <= high")
        return cls("uniform", lo, hi)

    @property
    def is_zero(self) -> bool:
        """True when no latency is added at all (the fast path)."""
        return self.kind == "fixed" and self.a == 0

    @property
    def lognormal_params(self) -> tuple[float, float]:
        """(mu, sigma) of the underlying normal for a lognormal spec."""
        mu = math.log(self.a)
        return mu, (math.log(self.b) - mu) / 1.6448536269514722

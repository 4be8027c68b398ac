"""Wire types shared by the engine's parts and by the functional core.

A request is content-addressed: ``key`` is the hash of its canonical body, so the cache, the
ledger and the output table all speak about the same thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Endpoint = Literal["chat.completions", "embeddings"]
Status = Literal["ok", "error"]


@dataclass(frozen=True, slots=True)
class LLMRequest:
    """One call to an OpenAI-compatible endpoint, exactly as it will be sent."""

    key: str
    endpoint: Endpoint
    body: dict[str, Any]
    prompt_tokens: int
    max_output_tokens: int = 0
    input_keys: tuple[str, ...] = ()
    """Embeddings batch: the request key of each input sent alone (the engine caches per input)."""
    input_tokens: tuple[int, ...] = ()
    """Embeddings batch: estimated tokens of each input (splits usage over the inputs)."""

    @property
    def reserved_tokens(self) -> int:
        """Tokens the provider counts against its limit before the call (prompt + max output)."""
        return self.prompt_tokens + self.max_output_tokens


@dataclass(slots=True)
class LLMResult:
    """The outcome of one request: the provider's JSON body, or an explicit error."""

    key: str
    status: Status
    response: dict[str, Any] | None = None
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    latency_s: float = 0.0
    attempts: int = 0
    from_cache: bool = False
    model: str | None = None
    retries: int = 0
    rate_limited: int = 0
    uncertain_attempts: int = 0
    cached_input_tokens: int = 0
    response_text: str | None = None
    fatal: bool = False
    inputs_cached: bool = False
    """An embeddings batch answer the engine already cached per input (see ``input_keys``)."""


@dataclass(slots=True)
class RunContext:
    """Who is spending: recorded with every ledger row, and how much the run spent so far.

    ``partition`` is the run's one partition key (None when unpartitioned or when the run spans
    several). A run over several partitions sets ``row_partitions`` (the partition key of each
    input row, from the asset's partition column); the core then books each request to the
    partitions of the rows it serves in ``request_partitions`` (request key -> {partition:
    share}), so the ledger records spend per partition whatever the run shape.
    ``spent_usd`` is what engine calls with this context spent (the budget's per-run memory when
    no ledger can be read: ad hoc runs, ledger off).
    """

    run_id: str = "adhoc"
    asset: str = ""
    partition: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    row_partitions: list[str | None] | None = None
    request_partitions: dict[str, dict[str | None, float]] = field(default_factory=dict)
    spent_usd: float = 0.0

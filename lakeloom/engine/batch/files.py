"""The Batch API on the wire: JSONL input lines, batch chunks within limits, output/error lines.

Every call goes through the official SDK (``AsyncOpenAI.files`` / ``.batches``), with the SDK's
own retries on (these are a handful of control-plane calls, not the request stream). A line's
``custom_id`` is the request key, so answers map back to requests without any extra state, and
the line's ``body`` is the exact canonical body text that was hashed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import openai
import polars as pl

from lakeloom.engine.crash import crash_point
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.transport import FATAL_STATUS, _shape_problem, sdk_client

URLS = {"chat.completions": "/v1/chat/completions", "embeddings": "/v1/embeddings"}
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})


def jsonl_line(url: str, key: str, body_text: str) -> bytes:
    """One input line: ``{"custom_id", "method", "url", "body"}`` (body = the hashed text)."""
    return (f'{{"custom_id":"{key}","method":"POST","url":"{url}","body":{body_text}}}\n').encode()


def embedding_inputs(body: dict[str, Any]) -> int:
    """How many inputs an embeddings request carries (OpenAI caps them per batch)."""
    value = body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


@dataclass(frozen=True, slots=True)
class ChunkLimits:
    """What one batch may hold."""

    max_requests: int
    max_bytes: int
    max_tokens: int | None = None
    max_embedding_inputs: int | None = None


def chunk(
    sizes: Sequence[int],
    tokens: Sequence[int],
    inputs: Sequence[int],
    limits: ChunkLimits,
) -> list[list[int]]:
    """Cut items (in the given order) into chunks that respect every limit; returns positions.

    An item larger than a limit on its own still gets a chunk of its own (the provider then
    reports it, and it is retried online or reported like any failed line).
    """
    chunks: list[list[int]] = []
    current: list[int] = []
    used_bytes = used_tokens = used_inputs = 0
    for pos, (size, tok, inp) in enumerate(zip(sizes, tokens, inputs, strict=True)):
        over = current and (
            len(current) >= limits.max_requests
            or used_bytes + size > limits.max_bytes
            or (limits.max_tokens is not None and used_tokens + tok > limits.max_tokens)
            or (
                limits.max_embedding_inputs is not None
                and used_inputs + inp > limits.max_embedding_inputs
            )
        )
        if over:
            chunks.append(current)
            current, used_bytes, used_tokens, used_inputs = [], 0, 0, 0
        current.append(pos)
        used_bytes += size
        used_tokens += tok
        used_inputs += inp
    if current:
        chunks.append(current)
    return chunks


@dataclass(slots=True)
class LineOutcome:
    """What the provider said about one line: a body (as text), or an error and whether to retry."""

    key: str
    body: dict[str, Any] | None = None
    text: str | None = None
    error: str | None = None
    retryable: bool = False
    fatal: bool = False


def _error_text(body: Any) -> str:
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])[:300]
    return json.dumps(inner)[:300]


def parse_line(endpoint: str, text: str) -> LineOutcome | None:
    """Classify one output/error-file line (``None`` for a blank or unreadable line)."""
    try:
        line = json.loads(text)
        key = line["custom_id"]
    except (ValueError, KeyError, TypeError):
        return None
    response = line.get("response") or {}
    status = response.get("status_code")
    body = response.get("body")
    if status == 200 and isinstance(body, dict):
        problem = _shape_problem(endpoint, body)
        if problem is None:
            raw = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
            return LineOutcome(key, body=body, text=raw)
        return LineOutcome(key, error=f"batch line: {problem}", retryable=True)
    if isinstance(status, int):
        return LineOutcome(
            key,
            error=f"HTTP {status}: {_error_text(body)}",
            retryable=status in (408, 409, 429) or status >= 500,
            fatal=status in FATAL_STATUS,
        )
    error = line.get("error") or {}
    code = error.get("code") or "batch_error"
    return LineOutcome(key, error=f"{code}: {error.get('message') or 'no result'}", retryable=True)


def jsonl_lines(text: str) -> list[str]:
    r"""The non-blank lines of a JSON Lines text, cut at ``"\n"`` only (``"\r\n"`` tolerated).

    Not ``str.splitlines()``: it also cuts at U+2028, U+2029, U+0085, ``\x1c``-``\x1e``,
    ``\x0b`` and ``\x0c``, which a JSON string may hold raw, so an answer containing one would
    be lost (and bought again online).
    """
    return [line.removesuffix("\r") for line in text.split("\n") if line.strip(" \t\r")]


def parse_file(endpoint: str, text: str) -> dict[str, LineOutcome]:
    """Classify every line of an output or error file, by custom id.

    Answers (status 200) are cut out of their lines by polars (``json_path_match``), so the
    cached text is the provider's body without a Python re-serialization (~4x faster on 100k
    lines); every other line goes through :func:`parse_line`.
    """
    lines = jsonl_lines(text)
    if not lines:
        return {}
    line = pl.col("line")
    frame = pl.DataFrame({"line": lines}, schema={"line": pl.String}).with_columns(
        line.str.json_path_match("$.custom_id").alias("key"),
        line.str.json_path_match("$.response.status_code").alias("status"),
        line.str.json_path_match("$.response.body").alias("body"),
    )
    out: dict[str, LineOutcome] = {}
    for raw, key, status, body_text in frame.iter_rows():
        if status == "200" and key is not None and body_text is not None:
            try:
                body = json.loads(body_text)
            except ValueError:
                body = None
            if isinstance(body, dict):
                problem = _shape_problem(endpoint, body)
                out[key] = (
                    LineOutcome(key, body=body, text=body_text)
                    if problem is None
                    else LineOutcome(key, error=f"batch line: {problem}", retryable=True)
                )
                continue
        outcome = parse_line(endpoint, raw)
        if outcome is not None:
            out[outcome.key] = outcome
    return out


def batch_errors(batch: Any) -> str:
    """The provider's reasons for a failed batch, in one line."""
    data = getattr(getattr(batch, "errors", None), "data", None) or []
    parts = [f"{e.code}: {e.message}" + (f" (line {e.line})" if e.line else "") for e in data[:3]]
    return "; ".join(parts) or "no reason given"


class BatchAPI:
    """Files + Batches calls on the official SDK client (async context manager).

    Examples:
        >>> async with BatchAPI(config) as api:  # doctest: +SKIP
        ...     file_id = await api.upload("in.jsonl", data)
        ...     batch = await api.create(file_id, "/v1/chat/completions")
    """

    def __init__(self, config: ProviderConfig, *, retries: int = 5) -> None:
        """Bind a provider; ``retries`` are the SDK's own (backoff, Retry-After)."""
        self.config = config
        self.retries = retries
        self._sdk: Any = None

    async def __aenter__(self) -> BatchAPI:
        """Open the SDK client."""
        self._sdk = sdk_client(self.config).with_options(
            max_retries=self.retries, timeout=max(self.config.timeout_s, 300.0)
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close it."""
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None

    async def upload(self, name: str, data: bytes) -> str:
        """Upload a JSONL input file (purpose ``batch``); returns its id."""
        created = await self._sdk.files.create(
            file=(name, data, "application/jsonl"), purpose="batch"
        )
        return created.id

    async def file_exists(self, file_id: str) -> bool:
        """True when the provider still has ``file_id``."""
        try:
            await self._sdk.files.retrieve(file_id)
        except openai.NotFoundError:
            return False
        return True

    async def create(self, file_id: str, url: str, metadata: dict[str, str]) -> Any:
        """Create a batch over an uploaded file."""
        return await self._sdk.batches.create(
            input_file_id=file_id, endpoint=url, completion_window="24h", metadata=metadata
        )

    async def find(self, file_id: str, job: str | None = None, *, scan: int = 500) -> Any | None:
        """The newest batch created from ``file_id`` or tagged ``lakeloom_job=job``.

        A crash between creating a batch and recording it leaves a batch that runs and bills:
        the next run finds it here instead of paying for a second one.
        """
        seen = 0
        async for batch in self._sdk.batches.list(limit=100):
            tag = (batch.metadata or {}).get("lakeloom_job")
            if batch.input_file_id == file_id or (job is not None and tag == job):
                return batch
            seen += 1
            if seen >= scan:
                break
        return None

    async def retrieve(self, batch_id: str) -> Any:
        """The batch object now."""
        return await self._sdk.batches.retrieve(batch_id)

    async def cancel(self, batch_id: str) -> Any:
        """Ask the provider to cancel (answers so far stay in the output file)."""
        return await self._sdk.batches.cancel(batch_id)

    async def content(self, file_id: str) -> str:
        """Download a file's text (UTF-8, whatever charset the response claims)."""
        parts: list[bytes] = []
        async with self._sdk.files.with_streaming_response.content(file_id) as response:
            async for part in response.iter_bytes(1 << 16):
                parts.append(part)
                crash_point("batch_download")  # received in part: the crash-point tests
        return b"".join(parts).decode("utf-8")

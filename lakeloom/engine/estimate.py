"""Dry run: what a run would send, read and cost, computed without sending anything.

The forecast goes through the same steps as a real run up to the point of sending: hashing,
the cache join (hits cost nothing), the pre-flight checks (prices, context windows) and token
counting. Output tokens are unknowable before the call, so the estimate says where it came
from: an explicit ``expected_output_tokens``, the mean of this model's cached responses
("history"), or the requests' ``max_tokens`` (an upper bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import polars as pl

from lakeloom.engine.plan import plan
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.types import Endpoint, LLMRequest


class ForecastSource(Protocol):
    """What a forecast reads from an engine (``lakeloom.engine.runner.Engine`` is one).

    A protocol, not the ``Engine`` class, so that the runner can import the forecast and the
    forecast not the runner.
    """

    cache: Any
    prices: Any

    @property
    def provider(self) -> ProviderConfig:
        """The provider the run would send to."""
        ...

    def match(self, frame: pl.DataFrame) -> Any:
        """Cache hits for the frame's keys."""
        ...

    def misses(self, frame: pl.DataFrame, hit_mask: Any) -> pl.DataFrame:
        """The frame's requests that the cache does not answer."""
        ...


@dataclass(slots=True)
class Forecast:
    """Rows, cache hits, tokens, dollars and duration of a run that has not happened."""

    rows: int
    cache_hits: int
    to_send: int
    input_tokens: int
    output_tokens: int
    output_basis: str
    online_usd: float
    batch_usd: float
    duration_s: float | None
    rpm: float | None
    tpm: float | None
    models: dict[str, int] = field(default_factory=dict)
    requests: int | None = None
    """Requests to send (``to_send`` counts rows: an embeddings batch holds many)."""

    def as_metadata(self) -> dict[str, Any]:
        """Flat values for logs and Dagster metadata."""
        out = asdict(self)
        out["online_usd"] = round(self.online_usd, 6)
        out["batch_usd"] = round(self.batch_usd, 6)
        return out

    def __str__(self) -> str:
        """Summarize in one line."""
        duration = (
            f"~{self.duration_s:,.0f}s at {self.rpm or '-'} rpm / {self.tpm or '-'} tpm"
            if self.duration_s is not None
            else "unknown (no rpm/tpm limits configured)"
        )
        batched = ""
        if self.requests is not None and self.requests != self.to_send:
            batched = f" in {self.requests:,} requests"
        return (
            f"{self.rows:,} rows: {self.cache_hits:,} cached, {self.to_send:,} to send{batched} · "
            f"{self.input_tokens:,} input + ~{self.output_tokens:,} output tokens "
            f"({self.output_basis}) · online ${self.online_usd:,.4f} · batch "
            f"${self.batch_usd:,.4f} · duration {duration}"
        )


def _history(engine: ForecastSource, models: list[str]) -> dict[str, float]:
    """Mean output tokens of cached responses per model (the best guess for new ones)."""
    cache = engine.cache
    if cache is None or not models:
        return {}
    lf = cache._scan(models)  # noqa: SLF001 - same package
    if lf is None:
        return {}
    means = lf.group_by("model").agg(pl.col("output_tokens").mean().alias("m")).collect()
    return {m: float(v) for m, v in means.iter_rows() if v is not None}


def _rows_per_request(frame: pl.DataFrame, given: Mapping[str, LLMRequest] | None) -> pl.Series:
    """Rows each request of ``frame`` answers: its inputs for an embeddings batch, else 1."""
    if not given:
        return pl.Series("rows", [1] * frame.height, dtype=pl.Int64)
    counts = [len(r.input_keys) or 1 if (r := given.get(k)) else 1 for k in frame["key"]]
    return pl.Series("rows", counts, dtype=pl.Int64)


def forecast(
    engine: ForecastSource,
    endpoint: Endpoint,
    frame: pl.DataFrame,
    *,
    given: Mapping[str, LLMRequest] | None = None,
    expected_output_tokens: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
) -> Forecast:
    """Forecast a run of ``frame`` (a request frame) on ``engine``; sends nothing.

    Raises the same pre-flight errors as a real run (unknown model, context window).
    """
    matched = engine.match(frame)
    hit_mask = matched["response"].is_not_null()
    misses = engine.misses(frame, hit_mask)
    planned = plan(endpoint, misses, provider=engine.provider, prices=engine.prices, given=given)
    models = sorted(set(planned.models))
    history = {} if expected_output_tokens is not None else _history(engine, models)
    basis = "given" if expected_output_tokens is not None else None
    input_tokens = output_tokens = reserved = 0
    online = batch = 0.0
    per_model: dict[str, int] = {}
    for request, price, model, worst_out in zip(
        planned.requests, planned.prices, planned.models, planned.worst_output_tokens, strict=True
    ):
        if endpoint == "embeddings":
            out = 0
        elif expected_output_tokens is not None:
            out = expected_output_tokens
        elif model in history:
            out, basis = round(history[model]), basis or "history"
        else:
            out, basis = worst_out, "max_tokens (upper bound)"
        input_tokens += request.prompt_tokens
        output_tokens += out
        reserved += request.reserved_tokens
        online += price.cost(input_tokens=request.prompt_tokens, output_tokens=out)
        batch += price.batch_cost(input_tokens=request.prompt_tokens, output_tokens=out)
        per_model[model] = per_model.get(model, 0) + 1
    rpm = rpm or engine.provider.rpm
    tpm = tpm or engine.provider.tpm
    n = len(planned.requests)
    spans = [60.0 * n / rpm] if rpm else []
    if tpm:
        spans.append(60.0 * reserved / tpm)
    rows = _rows_per_request(frame, given)  # an embeddings batch counts its inputs
    return Forecast(
        rows=int(rows.sum()),
        cache_hits=int(rows.filter(hit_mask).sum()),
        to_send=sum(len(r.input_keys) or 1 for r in planned.requests),
        requests=n,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        output_basis=basis or ("none" if endpoint == "embeddings" else "history"),
        online_usd=online,
        batch_usd=batch,
        duration_s=max(spans) if spans else None,
        rpm=rpm,
        tpm=tpm,
        models=per_model,
    )

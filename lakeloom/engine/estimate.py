"""Dry run: what a run would send, read and cost, computed without sending anything.

The forecast is a pure function of a run's :class:`~lakeloom.engine.prepare.Prepared` (the
same hashing, cache join, pre-flight checks and token counts a real run sends from: hits cost
nothing). Output tokens are unknowable before the call, so the estimate says where it came
from: an explicit ``expected_output_tokens``, the mean of this model's cached responses
("history"), or the requests' ``max_tokens`` (an upper bound).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from lakeloom.engine.prepare import Prepared


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


def forecast(
    prepared: Prepared,
    *,
    history: Mapping[str, float] | None = None,
    expected_output_tokens: int | None = None,
    rpm: float | None = None,
    tpm: float | None = None,
) -> Forecast:
    """Forecast the run ``prepared`` describes; a pure function of it (reads and sends nothing).

    ``history``: mean output tokens of cached responses per model (see
    ``prepare.output_history``); ``rpm``/``tpm``: the limits the run would obey.
    """
    endpoint, planned = prepared.endpoint, prepared.planned
    history = {} if expected_output_tokens is not None else (history or {})
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
    n = len(planned.requests)
    spans = [60.0 * n / rpm] if rpm else []
    if tpm:
        spans.append(60.0 * reserved / tpm)
    rows = prepared.rows_per_request()  # an embeddings batch counts its inputs
    return Forecast(
        rows=int(rows.sum()),
        cache_hits=int(rows.filter(prepared.hit_mask).sum()),
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

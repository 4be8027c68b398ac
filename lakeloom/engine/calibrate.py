"""Calibrate a forecast's prompt tokens with what the provider really counted for cached requests.

The engine counts prompt tokens with a local tokenizer (schemas and message overhead included,
as OpenAI bills them). Other servers count differently (llama.cpp, vLLM, the simulator), so a
forecast can be off by a constant factor. When the request set has cache hits, their responses
carry the provider's own ``prompt_tokens``: the ratio reported / estimated over up to
``sample`` of them rescales the forecast's input tokens and dollars (single-model forecasts;
output tokens are already estimated from the same history).
"""

from __future__ import annotations

import dataclasses

from lakeloom.engine.cost import PriceTable
from lakeloom.engine.estimate import Forecast
from lakeloom.engine.prepare import Prepared
from lakeloom.engine.tokens import count_prompt_tokens

MIN_HITS = 20
"""Fewer cached answers than this: keep the tokenizer's estimate."""


def calibrate(
    prepared: Prepared,
    prices: PriceTable,
    forecast: Forecast,
    *,
    sample: int = 500,
) -> tuple[Forecast, str]:
    """Return the forecast with calibrated input tokens and dollars, and how they were found.

    Reads the cache hits ``prepared`` already matched (no second lookup).
    """
    basis = "tokenizer estimate"
    requests = prepared.requests
    if not requests or forecast.to_send == 0 or len(forecast.models) != 1:
        return forecast, basis
    matched = prepared.matched
    hits = [i for i, hit in enumerate(prepared.hit_mask) if hit][:sample]
    if len(hits) < MIN_HITS:
        return forecast, basis
    reported = matched["input_tokens"].gather(hits).fill_null(0).to_list()
    chosen = [requests[i] for i in hits]
    unknown = [r.body for r in chosen if r.prompt_tokens <= 0]
    counted = iter(count_prompt_tokens(chosen[0].endpoint, unknown)) if unknown else iter(())
    estimated = [r.prompt_tokens if r.prompt_tokens > 0 else next(counted) for r in chosen]
    if sum(estimated) <= 0 or sum(reported) <= 0:
        return forecast, basis
    ratio = sum(reported) / sum(estimated)
    price = prices.get(next(iter(forecast.models)))
    tokens = round(forecast.input_tokens * ratio)
    out = forecast.output_tokens
    calibrated = dataclasses.replace(
        forecast,
        input_tokens=tokens,
        online_usd=price.cost(input_tokens=tokens, output_tokens=out),
        batch_usd=price.batch_cost(input_tokens=tokens, output_tokens=out),
    )
    return calibrated, f"calibrated on {len(hits)} cached answers (x{ratio:.2f})"

"""Turning request bodies into keyed, priced, token-counted requests, checked before sending.

Everything that can be wrong with the input is found here, before the first request leaves.
Errors about the settings (an empty input, a body without a model, a model with no price) raise
and name the input rows. A request over one of the model's limits (``provider_limits``: a chat
prompt over the context window, a ``max_tokens`` over the model's max output, an embedding
input over its per-input window, a batch over the inputs or tokens one request may hold) is
that row's error instead: it is *rejected* (nothing sent, nothing reserved from the budget) and
the other rows proceed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from lakeloom.engine.cost import ModelPrice, PriceTable, worst_output_tokens
from lakeloom.engine.keys import cache_keys, canonical_json, request_keys
from lakeloom.engine.provider import ProviderConfig
from lakeloom.engine.provider_limits import Limits, embedding_input_limit, resolve_limits
from lakeloom.engine.tokens import count_prompt_tokens, count_texts, embedding_inputs
from lakeloom.engine.types import Endpoint, LLMRequest, LLMResult

_MAX_NAMED_ROWS = 5


class EmptyInputError(ValueError):
    """A run was asked to send nothing: usually an upstream partition with no rows."""


class InvalidRequestError(ValueError):
    """A request body cannot be sent as is (no model, not JSON, not an object)."""


Bodies = pl.Series | Sequence[Mapping[str, Any]] | Sequence[str]


def _frame(texts: pl.Series, keys: pl.Series, namespace: str) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "row": pl.int_range(0, texts.len(), dtype=pl.UInt32, eager=True),
            "key": keys,
            "cache_key": cache_keys(keys, namespace),
            "body": texts.alias("body"),
        }
    )


def _empty(endpoint: str) -> EmptyInputError:
    return EmptyInputError(
        f"no requests to send to {endpoint}: the input has 0 rows (an empty partition?)"
    )


def request_frame(endpoint: Endpoint, bodies: Bodies, *, namespace: str = "") -> pl.DataFrame:
    """One row per input: ``row``, ``key`` (request hash), ``cache_key``, ``body`` (JSON text).

    ``bodies`` is a Series/list of canonical JSON strings (see ``core.hashing.canonical_bodies``)
    or a list of dicts (canonicalized here).
    """
    if isinstance(bodies, pl.Series):
        texts = bodies.cast(pl.String)
    else:
        items = list(bodies)
        texts = pl.Series(
            "body",
            [b if isinstance(b, str) else canonical_json(b) for b in items],
            dtype=pl.String,
        )
    if texts.len() == 0:
        raise _empty(endpoint)
    if texts.null_count():
        raise InvalidRequestError(f"row {texts.is_null().arg_max()}: request body is null")
    return _frame(texts, request_keys(endpoint, texts), namespace)


def requests_frame(requests: Sequence[LLMRequest], *, namespace: str = "") -> pl.DataFrame:
    """Build the same frame for ready-made requests (their own keys are kept)."""
    if not requests:
        raise _empty("the provider")
    endpoints = {r.endpoint for r in requests}
    if len(endpoints) > 1:
        raise InvalidRequestError(f"one run sends to one endpoint, got {sorted(endpoints)}")
    texts = pl.Series("body", [canonical_json(r.body) for r in requests], dtype=pl.String)
    keys = pl.Series("key", [r.key for r in requests], dtype=pl.String)
    return _frame(texts, keys, namespace)


@dataclass(slots=True)
class Planned:
    """The requests to send (cache misses), with what the budget and the ledger need.

    ``rejected`` holds one error result per request refused before sending (over a limit):
    nothing is sent or reserved for them, and they reach the results like any other answer.
    """

    requests: list[LLMRequest] = field(default_factory=list)
    cache_keys: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    prices: list[ModelPrice] = field(default_factory=list)
    worst_usd: list[float] = field(default_factory=list)
    worst_output_tokens: list[int] = field(default_factory=list)
    rejected: list[LLMResult] = field(default_factory=list)


def _name_rows(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:_MAX_NAMED_ROWS])
    more = f" and {len(rows) - _MAX_NAMED_ROWS} more" if len(rows) > _MAX_NAMED_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def _at_rows(exc: ValueError, rows: list[int], detail: str) -> ValueError:
    """Tag an input error with its request positions and detail, for callers to name rows.

    ``core.provenance.run_requests`` names them by key (``ticket_id=B9``).
    """
    exc.rows, exc.detail = list(rows), detail  # type: ignore[attr-defined]
    return exc


def _output_setting(body: Mapping[str, Any]) -> str:
    """The body's output-length setting, as the provider reads it (the newer name first)."""
    return "max_completion_tokens" if body.get("max_completion_tokens") else "max_tokens"


def _max_output(endpoint: Endpoint, body: Mapping[str, Any]) -> int:
    if endpoint == "embeddings":
        return 0
    value = body.get(_output_setting(body)) or 0
    return int(value) if isinstance(value, int) else 0


def over_limit(
    endpoint: Endpoint,
    limits: Limits,
    model: str,
    prompt: int,
    out: int,
    input_tokens: Sequence[int] = (),
    setting: str = "max_tokens",
) -> str | None:
    """Why one request cannot be sent as is (None when it fits the model's limits).

    ``setting`` names the body's output-length field (``max_tokens`` or
    ``max_completion_tokens``): over the model's max output, OpenAI answers HTTP 400.
    """
    if endpoint != "embeddings":
        if limits.max_output and out > limits.max_output:
            return (
                f"{setting} {out:,} > max output {limits.max_output:,} for {model!r}; "
                f"lower {setting}"
            )
        window = limits.context_window
        if window and prompt + out > window:
            return (
                f"over context window: {prompt + out:,} tokens > {window:,} ({prompt:,} prompt "
                f"+ {out:,} max output tokens for {model!r}); shorten the input or lower "
                "max_tokens"
            )
        return None
    per_input = embedding_input_limit(limits)
    if per_input:
        over = [(i, n) for i, n in enumerate(input_tokens) if n > per_input]
        if over:
            i, n = over[0]
            where = f" (input {i} of {len(input_tokens)})" if len(input_tokens) > 1 else ""
            return f"over context window: {n:,} tokens > {per_input:,} for {model!r}{where}"
    if limits.max_inputs and len(input_tokens) > limits.max_inputs:
        return f"too many inputs: {len(input_tokens):,} > {limits.max_inputs:,} per request"
    if limits.max_request_tokens and prompt > limits.max_request_tokens:
        return (
            f"over the request token limit: {prompt:,} tokens > {limits.max_request_tokens:,} "
            f"summed over one request for {model!r}"
        )
    return None


def _input_counts(bodies: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Estimated tokens of every input of every embeddings body (one count per input)."""
    return [count_texts(embedding_inputs(b), str(b.get("model", ""))) for b in bodies]


def _parse(
    row: int, text: str, ready: LLMRequest | None, parsed: Sequence[Mapping[str, Any]] | None
) -> Mapping[str, Any]:
    try:
        if ready is not None:
            body: Any = ready.body
        else:
            body = parsed[row] if parsed is not None else json.loads(text)
    except ValueError as exc:
        detail = f"request body is not JSON ({exc})"
        raise _at_rows(InvalidRequestError(f"row {row}: {detail}"), [row], detail) from None
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        detail = "request body needs a string 'model'"
        raise _at_rows(InvalidRequestError(f"row {row}: {detail}"), [row], detail)
    return body


def plan(
    endpoint: Endpoint,
    misses: pl.DataFrame,
    *,
    provider: ProviderConfig,
    prices: PriceTable,
    given: Mapping[str, LLMRequest] | None = None,
    parsed: Sequence[Mapping[str, Any]] | None = None,
) -> Planned:
    """Parse, price and count the cache misses (a request frame); raise on bad settings.

    ``given`` holds ready-made requests by key: their bodies are not re-parsed and their
    ``prompt_tokens`` (when > 0; per input: ``input_tokens``) are trusted. ``parsed`` holds
    the input bodies as dicts by row, when the caller had them (no JSON round trip).
    """
    planned = Planned()
    bodies: list[Mapping[str, Any]] = []
    readies: list[LLMRequest | None] = []
    keys: list[str] = []
    unknown: dict[str, list[int]] = {}
    price_of: dict[str, ModelPrice | None] = {}
    columns = misses.select("row", "key", "cache_key", "body")
    for row, key, ckey, text in columns.iter_rows():
        ready = given.get(key) if given else None
        body = _parse(row, text, ready, parsed)
        model = provider.price_model or body["model"]
        if model not in price_of:
            price_of[model] = prices.find(model)
        price = price_of[model]
        if price is None:
            unknown.setdefault(model, []).append(row)
            continue
        bodies.append(body)
        readies.append(ready)
        keys.append(key)
        planned.cache_keys.append(ckey)
        planned.rows.append(row)
        planned.texts.append(text)
        planned.models.append(model)
        planned.prices.append(price)
    if unknown:
        model, rows = next(iter(unknown.items()))
        try:
            prices.get(model)
        except ValueError as exc:
            raise _at_rows(type(exc)(f"{exc} ({_name_rows(rows)})"), rows, str(exc)) from None
    _count_and_check(endpoint, planned, bodies, readies, keys, provider)
    return planned


def _count_and_check(
    endpoint: Endpoint,
    planned: Planned,
    bodies: list[Mapping[str, Any]],
    readies: list[LLMRequest | None],
    keys: list[str],
    provider: ProviderConfig,
) -> None:
    """Count tokens, keep what fits the limits in ``planned.requests``, reject the rest."""
    tokens = [r.prompt_tokens if r is not None else 0 for r in readies]
    per_input: list[Sequence[int]] = [()] * len(bodies)
    if endpoint == "embeddings":  # limits are per input: count each (unless the caller did)
        todo = [i for i, r in enumerate(readies) if r is None or not r.input_tokens]
        for i, counts in zip(todo, _input_counts([bodies[i] for i in todo]), strict=True):
            per_input[i] = counts
            tokens[i] = tokens[i] if tokens[i] > 0 else sum(counts)
        for i, r in enumerate(readies):
            if r is not None and r.input_tokens:
                per_input[i] = r.input_tokens
    need = [i for i, t in enumerate(tokens) if t <= 0]
    for i, count in zip(
        need, count_prompt_tokens(endpoint, [bodies[i] for i in need]), strict=True
    ):
        tokens[i] = count
    limits_of: dict[str, tuple[Limits, ModelPrice]] = {}
    keep: list[int] = []
    for i, price in enumerate(planned.prices):
        model = planned.models[i]
        if model not in limits_of:  # once per model: plans of millions of rows stay cheap
            found = resolve_limits(model, overrides=provider.limits, price=price)
            bounded = price.model_copy(  # the limits (not only the price entry) bound the output
                update={"context_window": found.context_window, "max_output": found.max_output}
            )
            limits_of[model] = (found, bounded)
        limits, bounded = limits_of[model]
        prompt, out = tokens[i], _max_output(endpoint, bodies[i])
        setting = _output_setting(bodies[i])
        error = over_limit(endpoint, limits, model, prompt, out, per_input[i], setting)
        if error is not None:
            planned.rejected.append(LLMResult(keys[i], "error", error=error, model=model))
            continue
        ready = readies[i]
        planned.requests.append(
            LLMRequest(
                keys[i],
                endpoint,
                bodies[i],  # type: ignore[arg-type]
                prompt,
                out,
                input_keys=ready.input_keys if ready is not None else (),
                input_tokens=tuple(per_input[i]),
            )
        )
        worst_out = 0 if endpoint == "embeddings" else worst_output_tokens(bounded, prompt, out)
        planned.worst_output_tokens.append(worst_out)
        planned.worst_usd.append(price.cost(input_tokens=prompt, output_tokens=worst_out))
        keep.append(i)
    if planned.rejected:  # keep the per-request lists aligned with ``requests``
        for name in ("cache_keys", "texts", "rows", "models", "prices"):
            values = getattr(planned, name)
            setattr(planned, name, [values[i] for i in keep])

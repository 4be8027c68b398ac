"""``generate_column``: one typed LLM answer per row, validated, repaired, never dropped.

Flow for a frame: render the prompt per row (one polars expression), skip rows whose referenced
columns are null/blank, build one chat request per distinct prompt (its key hashes the whole
body: model, messages, schema, parameters), send the round through the engine (cache, limiter,
budget, retries), validate each answer with Pydantic, and re-ask the failures with the
validation error appended — a new request with its own key, at most ``max_repairs`` times. What
still fails is a row with ``_status='error'`` and the reason. Every attempt's tokens and cost are
charged to its row.

A re-run of failed rows (``supersedes``: the stored ``_request_hash`` of each failed row) asks
again instead of replaying the invalid answer and its repair chain from the cache: those rows'
requests get keys of their own (:func:`rerun_key`: the request key scoped by the hash it
supersedes), so the cache misses, the provider answers afresh, and the new answer is cached
under the new key. A step retry of the same re-run computes the same keys (nothing is paid
twice); the row records the new key in ``_request_hash`` and the old one in ``_supersedes``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import polars as pl
from pydantic import ValidationError

from lakeloom.core.provenance import (
    ColumnStats,
    RowLedger,
    Runner,
    assemble,
    check_keep,
    run_requests,
)
from lakeloom.core.row_keys import row_labels
from lakeloom.core.schema import OutputSchema, inline_refs
from lakeloom.core.specs import GenerateSpec, StructuredOutput
from lakeloom.engine.keys import request_key
from lakeloom.engine.types import LLMRequest, LLMResult, RunContext

ENDPOINT = "chat.completions"
_MAX_ERROR_CHARS = 600


def response_format(schema: OutputSchema, mode: StructuredOutput) -> dict[str, Any] | None:
    """Build the ``response_format`` for a capability (``None``: free text or prompt-only)."""
    if schema.json_schema is None or mode == "none":
        return None
    if mode == "json_object":  # llama.cpp: grammar from an inline schema; rejects json_schema
        return {"type": "json_object", "schema": inline_refs(schema.json_schema)}
    name = re.sub(r"[^a-zA-Z0-9_-]", "_", schema.name)[:64] or "answer"
    return {
        "type": "json_schema",
        "json_schema": {"name": name, "schema": schema.json_schema, "strict": True},
    }


def system_message(spec: GenerateSpec, mode: StructuredOutput) -> str | None:
    """Build the system message; prompt-only providers also get the JSON schema spelled out here."""
    parts = [spec.system] if spec.system else []
    schema = spec.schema.json_schema
    if schema is not None and mode == "none":
        parts.append(
            "Answer with one JSON object, no prose and no code fence, that matches this JSON "
            f"schema:\n{spec.schema.schema_json}"
        )
    return "\n\n".join(parts) or None


def _body(spec: GenerateSpec, mode: StructuredOutput, messages: list[dict[str, str]]) -> dict:
    body: dict[str, Any] = {
        "model": spec.model,
        "messages": messages,
        "temperature": spec.temperature,
        "max_tokens": spec.max_tokens,
    }
    if spec.seed is not None:
        body["seed"] = spec.seed
    fmt = response_format(spec.schema, mode)
    if fmt is not None:
        body["response_format"] = fmt
    return body


def rerun_key(key: str, supersedes: str | None) -> str:
    """The key of a request asked again to supersede a cached answer (``key`` when not).

    A different key for the same body: the cache misses, the provider is asked again, and the
    answer is cached beside (never over) the one it supersedes.
    """
    if not supersedes:
        return key
    return request_key("rerun", {"key": key, "supersedes": supersedes})


def _requests(
    bodies: list[dict[str, Any]], max_tokens: int, salts: Sequence[str | None] | None = None
) -> list[LLMRequest]:
    """Keyed requests; the engine counts their prompt tokens when it plans the misses."""
    salts = salts or [None] * len(bodies)
    return [
        LLMRequest(
            key=rerun_key(request_key(ENDPOINT, body), salt),
            endpoint=ENDPOINT,
            body=body,
            prompt_tokens=0,
            max_output_tokens=max_tokens,
        )
        for body, salt in zip(bodies, salts, strict=True)
    ]


def _answer(result: LLMResult) -> tuple[str | None, str | None]:
    """(content, finish_reason) of a chat completion result."""
    choice = ((result.response or {}).get("choices") or [{}])[0]
    message = choice.get("message") or {}
    if message.get("refusal"):
        return None, f"refusal: {message['refusal']}"
    return message.get("content"), choice.get("finish_reason")


def _reason(exc: Exception) -> str:
    """Shorten a validation error for the model to read (no pydantic URLs)."""
    if isinstance(exc, ValidationError):
        lines = []
        for err in exc.errors(include_url=False)[:8]:
            loc = ".".join(str(p) for p in err["loc"]) or "(root)"
            lines.append(f"{loc}: {err['msg']}")
        text = "; ".join(lines)
    else:
        text = str(exc)
    return text[:_MAX_ERROR_CHARS]


def _repair_messages(
    messages: list[dict[str, str]], content: str | None, reason: str, schema: OutputSchema
) -> list[dict[str, str]]:
    ask = f"Your answer was invalid: {reason}\n" + (
        "Reply again with only the corrected JSON object, matching the schema."
        if schema.json_schema is not None
        else "Reply again with only the answer."
    )
    return [
        *messages,
        {"role": "assistant", "content": content or ""},
        {"role": "user", "content": ask},
    ]


class _Pending:
    """One distinct prompt in flight: its conversation so far and the rows it serves."""

    __slots__ = (
        "messages",
        "rows",
        "tries",
        "in_tokens",
        "out_tokens",
        "cost",
        "last_error",
        "supersedes",
    )

    def __init__(
        self, messages: list[dict[str, str]], rows: list[int], supersedes: str | None = None
    ) -> None:
        self.messages = messages
        self.rows = rows
        self.supersedes = supersedes
        self.tries = 0
        self.in_tokens = 0
        self.out_tokens = 0
        self.cost = 0.0
        self.last_error: str | None = None

    def charge(self, result: LLMResult) -> None:
        """Count one attempt and its tokens and cost (the first row carries them)."""
        self.tries += 1
        self.in_tokens += result.input_tokens
        self.out_tokens += result.output_tokens
        self.cost += result.cost_usd


def run_generate(
    df: pl.DataFrame,
    spec: GenerateSpec,
    engine: Runner,
    *,
    keep: Sequence[str] | None = None,
    structured_output: StructuredOutput | None = None,
    context: RunContext | None = None,
    supersedes: Sequence[str | None] | None = None,
    label_columns: Sequence[str] | None = None,
) -> tuple[pl.DataFrame, ColumnStats]:
    """Generate ``spec.output_column`` for every row; return the frame and the run's stats.

    ``keep`` names the input columns to carry over (keys, partition columns); ``None`` keeps all.
    ``structured_output`` defaults to the engine's declared provider capability.
    ``supersedes`` (one per row, from a re-run of failed rows) is the stored ``_request_hash``
    of a failed row: that row is asked again rather than answered from the cache.
    ``label_columns`` name a row in errors (``ticket_id=B9``; default: ``keep``).
    """
    spec.validate_input(df.schema, where="input frame")
    check_keep(df.columns, keep, "input frame")
    mode = structured_output or provider_capability(engine)
    context = context if context is not None else RunContext()  # one budget for every round
    schema = spec.schema
    ledger = RowLedger(df.height)
    values: list[Any] = [None] * df.height
    stats = ColumnStats()
    latencies: list[float] = []
    labels = row_labels(df, label_columns if label_columns is not None else keep)
    queue = _distinct_prompts(df, spec, mode, ledger, supersedes)
    for round_no in range(spec.max_repairs + 1):
        if not queue:
            break
        requests = _requests(
            [_body(spec, mode, p.messages) for p in queue],
            spec.max_tokens,
            [p.supersedes for p in queue],
        )
        pending = {req.key: p for req, p in zip(requests, queue, strict=True)}
        _book_partitions(context, pending)
        results = run_requests(
            engine, requests, context, stats, labels=_request_labels(queue, labels)
        )
        if round_no:
            stats.repairs += len(requests)
        queue = []
        for key, item in pending.items():
            result = results[key]
            item.charge(result)
            if not result.from_cache and result.latency_s:
                latencies.append(result.latency_s)
            model = result.model or spec.model
            if result.status != "ok":
                _settle(ledger, item, key, model, "error", result.error or "request failed")
                continue
            content, finish = _answer(result)
            try:
                if finish and finish.startswith("refusal"):
                    raise ValueError(finish)
                value = schema.parse(content)
            except ValueError as exc:
                if _invalid(ledger, item, key, model, spec, content, finish, exc, round_no):
                    queue.append(item)
                continue
            for row in item.rows:
                values[row] = value
            _settle(ledger, item, key, model, "ok", None)

    frame = assemble(df, keep, schema.series(spec.output_column, values), ledger)
    return frame, stats.finish(ledger, latencies)


def _distinct_prompts(
    df: pl.DataFrame,
    spec: GenerateSpec,
    mode: StructuredOutput,
    ledger: RowLedger,
    supersedes: Sequence[str | None] | None,
) -> list[_Pending]:
    """One conversation per distinct (prompt, superseded hash); skipped rows settled here.

    Identical prompts are asked once and their answer serves every row that rendered it.
    """
    rendered = df.select(spec.template.expr("p"), spec.template.skip_reason().alias("s"))
    prompts, skips = rendered["p"].to_list(), rendered["s"].to_list()
    system = system_message(spec, mode)
    by_prompt: dict[tuple[str, str | None], _Pending] = {}
    olds = list(supersedes) if supersedes is not None else [None] * df.height
    for i, (prompt, skip, old) in enumerate(zip(prompts, skips, olds, strict=True)):
        if skip is not None:
            ledger.status[i], ledger.error[i] = "skipped", skip
            continue
        item = by_prompt.get((prompt, old))
        if item is None:
            messages = [{"role": "user", "content": prompt}]
            if system:
                messages.insert(0, {"role": "system", "content": system})
            item = by_prompt[(prompt, old)] = _Pending(messages, [], old)
        item.rows.append(i)
        ledger.supersedes[i] = old
    return list(by_prompt.values())


def _invalid(
    ledger: RowLedger,
    item: _Pending,
    key: str,
    model: str,
    spec: GenerateSpec,
    content: str | None,
    finish: str | None,
    exc: ValueError,
    round_no: int,
) -> bool:
    """An answer that failed validation: True to ask again (repair), else its rows fail."""
    reason = _reason(exc)
    if finish == "length":
        reason = f"answer cut off at max_tokens={spec.max_tokens} ({reason})"
    item.last_error = reason
    if round_no < spec.max_repairs:
        item.messages = _repair_messages(item.messages, content, reason, spec.schema)
        return True
    attempts = f"{item.tries} attempt" + ("s" if item.tries > 1 else "")
    _settle(ledger, item, key, model, "error", f"invalid output after {attempts}: {reason}")
    return False


def _book_partitions(context: RunContext, pending: dict[str, _Pending]) -> None:
    """Book each request to its first row's partition, the row that carries its spend."""
    rows = context.row_partitions
    if rows:
        for key, item in pending.items():
            context.request_partitions[key] = {rows[item.rows[0]]: 1.0}


def _request_labels(queue: list[_Pending], labels: list[str] | None) -> list[str] | None:
    """What names each request's rows in an error: its first row's key (+ identical rows)."""
    if labels is None:
        return None
    out = []
    for item in queue:
        more = len(item.rows) - 1
        out.append(labels[item.rows[0]] + (f" (+{more} identical rows)" if more else ""))
    return out


def _settle(
    ledger: RowLedger, item: _Pending, key: str, model: str, status: str, error: str | None
) -> None:
    """Write a finished prompt to its rows; the first row carries the spend, duplicates zero."""
    for j, row in enumerate(item.rows):
        ledger.status[row], ledger.error[row] = status, error
        ledger.request_hash[row], ledger.model[row] = key, model
        ledger.attempts[row] = item.tries if j == 0 else 0
        if j == 0:
            ledger.input_tokens[row] = item.in_tokens
            ledger.output_tokens[row] = item.out_tokens
            ledger.cost_usd[row] = item.cost


def provider_capability(engine: Any) -> StructuredOutput:
    """Return the structured-output mode of the engine's provider (default ``json_schema``)."""
    for owner in (engine, getattr(engine, "provider", None), getattr(engine, "config", None)):
        mode = getattr(owner, "structured_output", None)
        if mode in ("json_schema", "json_object", "none"):
            return mode
    return "json_schema"


def generate_column(
    df: pl.DataFrame,
    prompt: str,
    output: Any,
    *,
    engine: Runner,
    model: str,
    column: str = "output",
    system: str | None = None,
    temperature: float = 0.0,
    max_tokens: int = 512,
    max_repairs: int = 2,
    seed: int | None = None,
    keep: Sequence[str] | None = None,
    structured_output: StructuredOutput | None = None,
    context: RunContext | None = None,
) -> pl.DataFrame:
    """Add a typed LLM-generated column (plus provenance) to ``df``; rows out = rows in.

    Examples:
        >>> labels = generate_column(  # doctest: +SKIP
        ...     reviews, "Review: {text}", Literal["positive", "negative"],
        ...     engine=engine, model="gpt-4o-mini", column="sentiment", keep=["id"])
    """
    spec = GenerateSpec(
        prompt=prompt,
        output=output,
        model=model,
        output_column=column,
        system=system,
        temperature=temperature,
        max_tokens=max_tokens,
        max_repairs=max_repairs,
        seed=seed,
    )
    frame, _ = run_generate(
        df, spec, engine, keep=keep, structured_output=structured_output, context=context
    )
    return frame

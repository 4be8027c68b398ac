"""Batch input validation and line answering for the simulator's Batches API (no HTTP here).

Validation mirrors what OpenAI checks before a batch starts: JSON lines with a unique
``custom_id``, ``method`` POST, the batch's ``url``, an object ``body``, one model per batch and
at most ``max_requests`` lines. Answers reuse the online endpoints' body builders, seeded by the
canonical body text, so a line gets the same reply it would get online.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lakeloom.sim import payloads

if TYPE_CHECKING:
    from lakeloom.sim.server import Simulator

_MAX_REPORTED = 10
_UNPROCESSED = {
    "expired": (
        "batch_expired",
        "This request could not be executed before the completion window expired.",
    ),
    "cancelled": ("batch_cancelled", "This request was not executed: the batch was cancelled."),
}


class BatchError(ValueError):
    """The input file failed validation; ``errors`` are OpenAI ``BatchError`` objects."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors[0]["message"] if errors else "invalid batch")
        self.errors = errors


def _problem(code: str, message: str, line: int | None, param: str | None = None) -> dict:
    return {"code": code, "message": message, "line": line, "param": param}


def validate_lines(data: bytes, endpoint: str, max_requests: int) -> list[dict[str, Any]]:
    """Parse and check an input file; return ``[{custom_id, body, raw}]`` or raise."""
    problems: list[dict[str, Any]] = []
    lines: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    # JSON Lines end at "\n" only: str.splitlines() would also cut at U+2028, U+0085, \x1c...,
    # which JSON strings may hold raw
    for number, text in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
        if not text.strip():
            continue
        try:
            line = json.loads(text)
        except ValueError:
            problems.append(_problem("invalid_json_line", "This line is not valid JSON.", number))
            continue
        if not isinstance(line, dict):
            problems.append(_problem("invalid_request", "Each line must be an object.", number))
            continue
        cid, body = line.get("custom_id"), line.get("body")
        if not isinstance(cid, str) or not cid:
            problems.append(
                _problem(
                    "missing_required_parameter", "custom_id is required.", number, "custom_id"
                )
            )
        elif cid in seen:
            problems.append(
                _problem(
                    "duplicate_custom_id",
                    f"The custom_id {cid!r} is used more than once.",
                    number,
                    "custom_id",
                )
            )
        if line.get("method") != "POST":
            problems.append(_problem("invalid_value", "method must be 'POST'.", number, "method"))
        if line.get("url") != endpoint:
            problems.append(
                _problem(
                    "invalid_url",
                    f"url must be {endpoint!r} (the batch's endpoint), got {line.get('url')!r}.",
                    number,
                    "url",
                )
            )
        if not isinstance(body, dict):
            problems.append(_problem("invalid_value", "body must be an object.", number, "body"))
        else:
            models.add(str(body.get("model")))
        if isinstance(cid, str):
            seen.add(cid)
        if len(problems) >= _MAX_REPORTED:
            break
        raw = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        lines.append({"custom_id": cid, "body": body, "raw": raw.encode()})
    if not problems and len(models) > 1:
        problems.append(
            _problem(
                "mismatched_model",
                f"All requests in a batch must use the same model; found {sorted(models)}.",
                None,
                "body.model",
            )
        )
    if not problems and not lines:
        problems.append(_problem("empty_file", "The input file has no requests.", None))
    if not problems and len(lines) > max_requests:
        problems.append(
            _problem(
                "too_many_requests",
                f"The batch has {len(lines)} requests; the maximum is {max_requests}.",
                None,
            )
        )
    if problems:
        raise BatchError(problems)
    return lines


@dataclass(slots=True)
class Answered:
    """Output and error file contents, and the counts behind ``request_counts``."""

    output: bytes
    errors: bytes
    ok: int
    failed: int
    unprocessed: int
    prompt_tokens: int
    completion_tokens: int
    billed: list[tuple[str, bytes, int, int]] = field(default_factory=list)


def _answer(sim: Simulator, endpoint: str, line: dict[str, Any]) -> tuple[dict, int, int]:
    """The body the online endpoint would return, and its (prompt, completion) tokens."""
    cfg, body = sim.config, line["body"]
    if endpoint == "/v1/embeddings":
        prompt = payloads.embedding_prompt_tokens(body)
        return sim.embeddings_body(body), prompt, 0
    prompt, max_out = payloads.check_chat(body, cfg.default_max_tokens)
    if prompt + max_out > cfg.context_window:
        raise payloads.BadRequest(
            f"This model's maximum context length is {cfg.context_window} tokens; the request "
            f"has {prompt} prompt + {max_out} max output tokens.",
            param="messages",
            code="context_length_exceeded",
        )
    out = payloads.chat_completion(
        body, line["raw"], seed=cfg.seed, prompt_tokens=prompt, max_out=max_out
    )
    return out, prompt, out["usage"]["completion_tokens"]


def _http_line(cid: str, status: int, body: dict[str, Any]) -> str:
    """One output/error line, raw UTF-8 (U+2028 and friends unescaped, as JSON allows)."""
    return json.dumps(
        {
            "id": "batch_req_" + uuid.uuid4().hex[:24],
            "custom_id": cid,
            "response": {
                "status_code": status,
                "request_id": "req_" + uuid.uuid4().hex[:24],
                "body": body,
            },
            "error": None,
        },
        ensure_ascii=False,
    )


def answer_lines(
    sim: Simulator,
    lines: list[dict[str, Any]],
    upto: int,
    end: str,
    *,
    endpoint: str,
    fail_rate: float,
    seed: int,
) -> Answered:
    """Answer the first ``upto`` lines; the rest are unprocessed (``end``: expired/cancelled)."""
    rng = random.Random(seed)
    out: list[str] = []
    err: list[str] = []
    prompt_tokens = completion_tokens = 0
    billed: list[tuple[str, bytes, int, int]] = []  # (model, canonical body, prompt, completion)
    for line in lines[:upto]:
        cid = line["custom_id"]
        if fail_rate and rng.random() < fail_rate:
            body = {
                "error": {
                    "message": "The server had an error (injected).",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            err.append(_http_line(cid, 500, body))
            continue
        try:
            reply, prompt, completion = _answer(sim, endpoint, line)
        except payloads.BadRequest as exc:
            body = {
                "error": {
                    "message": str(exc),
                    "type": "invalid_request_error",
                    "param": exc.param,
                    "code": exc.code,
                }
            }
            err.append(_http_line(cid, 400, body))
            continue
        prompt_tokens += prompt
        completion_tokens += completion
        billed.append((str(line["body"].get("model")), line["raw"], prompt, completion))
        out.append(_http_line(cid, 200, reply))
    unprocessed = lines[upto:]
    if unprocessed:
        code, message = _UNPROCESSED.get(end, _UNPROCESSED["expired"])
        for line in unprocessed:
            err.append(
                json.dumps(
                    {
                        "id": "batch_req_" + uuid.uuid4().hex[:24],
                        "custom_id": line["custom_id"],
                        "response": None,
                        "error": {"code": code, "message": message},
                    }
                )
            )
    return Answered(
        output="".join(x + "\n" for x in out).encode(),
        errors="".join(x + "\n" for x in err).encode(),
        ok=len(out),
        failed=len(err),
        unprocessed=len(unprocessed),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        billed=billed,
    )

"""Response bodies of the simulator, built from the request alone (no HTTP, no limits).

Everything is deterministic: chat replies are seeded by a hash of the request body, embedding
vectors by a hash of each input text (so a text gets the same vector in any batch). The batch
API extension can reuse these builders line by line.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import time
import zlib
from typing import Any

import numpy as np

from lakeloom.sim import schema_fill

_WORDS = [
    "the",
    "a",
    "data",
    "lake",
    "loom",
    "column",
    "asset",
    "partition",
    "model",
    "token",
    "answer",
    "signal",
    "review",
    "value",
    "label",
    "table",
    "result",
    "summary",
    "quick",
    "calm",
    "bright",
    "steady",
    "simple",
    "clear",
    "useful",
]

# Plain-text replies are slices of one pre-drawn word stream: O(1) per reply.
_TEXT = " ".join(random.Random(7).choices(_WORDS, k=4096)) + " "
_TEXT_STARTS = [0] + [i + 1 for i, ch in enumerate(_TEXT) if ch == " "]


class BadRequest(ValueError):
    """The request is invalid; the message goes back to the client as a 400."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.code = code


def estimate_tokens(text: str) -> int:
    """Cheap deterministic token estimate: one token per 4 characters, at least 1."""
    return (len(text) + 3) // 4 or 1


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


def chat_prompt_tokens(messages: Any) -> int:
    """Prompt tokens of a chat request: content estimate + 3 per message + 3 (OpenAI-like)."""
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", param="messages")
    total = 3
    for message in messages:
        if not isinstance(message, dict):
            raise BadRequest("each message must be an object", param="messages")
        total += 3 + estimate_tokens(_content_text(message.get("content")))
    return total


def max_output_tokens(body: dict[str, Any], default: int) -> int:
    """``max_completion_tokens`` or ``max_tokens`` (what providers count before the call)."""
    value = body.get("max_completion_tokens") or body.get("max_tokens") or default
    if not isinstance(value, int) or value < 0:
        raise BadRequest("'max_tokens' must be a non-negative integer", param="max_tokens")
    return value


def check_chat(body: dict[str, Any], default_max_tokens: int) -> tuple[int, int]:
    """Validate a chat request before any limit is charged; return (prompt, max output) tokens."""
    if body.get("stream"):
        raise BadRequest("stream=true is not supported by the simulator", param="stream")
    n = body.get("n") or 1
    if not isinstance(n, int) or not 0 < n <= 16:
        raise BadRequest("'n' must be an integer in 1..16", param="n")
    response_schema(body)
    return chat_prompt_tokens(body.get("messages")), max_output_tokens(body, default_max_tokens)


def request_seed(raw: bytes, seed: int) -> int:
    """Derive a 64-bit seed from the request bytes and the simulator's seed."""
    digest = hashlib.blake2b(raw, digest_size=8, key=seed.to_bytes(8, "little", signed=True))
    return int.from_bytes(digest.digest(), "little")


def response_schema(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """Return the output mode of a chat request: ('text'|'json', schema or None).

    Accepts OpenAI ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}`` and
    llama.cpp ``{"type": "json_object", "schema": {...}}``.
    """
    fmt = body.get("response_format")
    if not fmt:
        return "text", None
    if not isinstance(fmt, dict):
        raise BadRequest("'response_format' must be an object", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        schema = fmt.get("schema")
        return "json", schema if isinstance(schema, dict) else None
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise BadRequest(
                "response_format.json_schema.schema must be an object",
                param="response_format.json_schema",
            )
        return "json", spec["schema"]
    raise BadRequest(f"unsupported response_format type {kind!r}", param="response_format.type")


def chat_content(mode: str, schema: dict[str, Any] | None, seed: int, malformed: bool) -> str:
    """Write the assistant message: schema-valid JSON, generic JSON, or plain text."""
    if mode == "json":
        rng = random.Random(seed)
        try:
            if schema is None:
                value: Any = {"answer": " ".join(rng.choice(_WORDS) for _ in range(6))}
            elif malformed and rng.random() < 0.5:
                return json.dumps(schema_fill.violate(schema, rng))
            else:
                value = schema_fill.fill(schema, rng)
        except schema_fill.SchemaError as exc:
            raise BadRequest(f"invalid JSON schema: {exc}", param="response_format") from None
        text = json.dumps(value, ensure_ascii=False)  # models write raw UTF-8, not \u escapes
        return text[: max(1, len(text) // 2)] if malformed else text
    start = seed % (len(_TEXT_STARTS) - 40)
    end = _TEXT_STARTS[start + 8 + (seed >> 32) % 32]
    text = _TEXT[_TEXT_STARTS[start] : end - 1] + "."
    text = text[0].upper() + text[1:]
    return text[: max(1, len(text) // 2)] if malformed else text


def chat_completion(
    body: dict[str, Any], raw: bytes, *, seed: int, prompt_tokens: int, max_out: int,
    malformed: bool = False,
) -> dict[str, Any]:  # fmt: skip
    """Build a full ``chat.completion`` object for ``body`` (deterministic from ``raw``)."""
    mode, schema = response_schema(body)
    rseed = request_seed(raw, seed)
    n = body.get("n") or 1
    choices = []
    completion_tokens = 0
    for index in range(n):
        content = chat_content(mode, schema, rseed + index, malformed)
        tokens = estimate_tokens(content)
        finish = "stop"
        if max_out and tokens > max_out:
            content, tokens, finish = content[: max_out * 4], max_out, "length"
        completion_tokens += tokens
        choices.append(
            {
                "index": index,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": finish,
                "logprobs": None,
            }
        )
    return {
        "id": f"chatcmpl-{rseed:016x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", ""),
        "system_fingerprint": "lakeloom-sim",
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embedding_inputs(body: dict[str, Any]) -> list[str]:
    """Return the inputs of an embeddings request as strings (token arrays as text)."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, int) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, str | list) for v in value):
            return [v if isinstance(v, str) else " ".join(map(str, v)) for v in value]
    raise BadRequest("'input' must be a non-empty string or array", param="input")


def embedding_vector(text: str, dim: int, seed: int) -> np.ndarray:
    """Embed ``text`` as a unit vector ``text``: hashed bag of words plus seeded noise.

    Texts that share words get a positive cosine similarity, so downstream models see a
    (weak) signal, while every text still gets its own deterministic vector.
    """
    noise_seed = zlib.crc32(text.encode("utf-8", "surrogatepass")) ^ (seed & 0xFFFFFFFF)
    vec = np.random.default_rng(noise_seed).standard_normal(dim).astype(np.float32)
    vec *= 0.5 / np.sqrt(dim)  # noise of norm ~0.5 against ~1.4 per word
    for word in text.lower().split():
        h = zlib.crc32(word.encode("utf-8", "surrogatepass"))
        vec[h % dim] += 1.0 if h & 0x80000000 else -1.0
        vec[(h >> 7) % dim] += 1.0 if h & 0x40000000 else -1.0
    norm = float(np.linalg.norm(vec))
    return vec / norm if norm > 0 else vec


def embeddings(body: dict[str, Any], *, dim: int, seed: int) -> dict[str, Any]:
    """Build a full embeddings ``list`` object with one usage entry."""
    texts = embedding_inputs(body)
    out_dim = embedding_dimensions(body, dim)
    as_base64 = body.get("encoding_format") == "base64"
    data = []
    tokens = 0
    for index, text in enumerate(texts):
        vec = embedding_vector(text, dim, seed)
        if out_dim < dim:  # like text-embedding-3: truncate, then renormalize
            vec = vec[:out_dim]
            vec = vec / (float(np.linalg.norm(vec)) or 1.0)
        tokens += estimate_tokens(text)
        emb: Any = (
            base64.b64encode(vec.astype("<f4").tobytes()).decode("ascii")
            if as_base64
            else np.round(vec, 6).tolist()
        )
        data.append({"object": "embedding", "index": index, "embedding": emb})
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }


def embedding_dimensions(body: dict[str, Any], dim: int) -> int:
    """Return the requested ``dimensions`` (default: the native ``dim``), validated."""
    out_dim = body.get("dimensions") or dim
    if not isinstance(out_dim, int) or not 0 < out_dim <= dim:
        raise BadRequest(f"'dimensions' must be an integer in 1..{dim}", param="dimensions")
    return out_dim


def embedding_prompt_tokens(body: dict[str, Any]) -> int:
    """Tokens an embeddings request counts against the token limit."""
    return sum(estimate_tokens(t) for t in embedding_inputs(body))

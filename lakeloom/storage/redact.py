"""One place that hides credentials in URLs and text before they leave the process.

Connection strings carry secrets in two places: the userinfo (``redis://:PASSWORD@host``,
``amqp://user:PASSWORD@host``) and the query (``?api-key=...``, ``X-Amz-Signature=...``,
``sig=...``). :func:`redact_url` masks both; :func:`redact_text` does it for every URL inside a
free-form message (an exception's text, a log line) and also hides explicitly known secret
values. :func:`url_identity` is the stable, secret-free form of a URL, for names that are
persisted (limiter keys, table columns, Redis keys).

This module imports nothing of lakeloom, so every layer (storage, engine, sensors, executors,
Modal apps) can use it.

Examples:
    >>> redact_url("redis://:s3cr3t@127.0.0.1:6379/0")
    'redis://***@127.0.0.1:6379/0'
    >>> redact_url("https://gw.example/v1?api-key=abc&region=eu")
    'https://gw.example/v1?api-key=***&region=eu'
    >>> url_identity("http://user:pw@host:8000/v1?api-key=abc")
    'http://host:8000/v1'
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

REDACTED = "***"

#: Query parameter names (lower case, without ``-``/``_``/``.``) that always hold a secret.
_SECRET_NAMES = frozenset(
    {
        "auth",
        "authorization",
        "code",
        "pass",
        "passwd",
        "password",
        "pwd",
        "secret",
        "session",
        "sig",
        "signature",
        "token",
        "key",
        "credential",
        "credentials",
    }
)
#: Endings that make a name secret: ``api-key``, ``access_token``, ``X-Amz-Signature``...
_SECRET_ENDINGS = ("key", "token", "secret", "password", "passwd", "signature", "credential")

_USERINFO = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://)([^\s/]*)@")
_MIN_IMPLICIT = 4  # a shorter password found in a URL is masked there, not everywhere
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>`]+")
_BARE_SECRETS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"),
    re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/\-]{8,}=*"),
)


def is_secret_name(name: str) -> bool:
    """True when a query parameter or setting called ``name`` looks like it holds a secret."""
    flat = re.sub(r"[^a-z0-9]", "", name.lower())
    return flat in _SECRET_NAMES or flat.endswith(_SECRET_ENDINGS)


def _split(url: str) -> tuple[str, str | None, str, str, str | None, str | None] | None:
    """``(scheme, userinfo, hostport, path, query, fragment)`` as RFC 3986 splits them.

    ``None`` for a part that is absent (``userinfo`` without ``@``, ``query`` without ``?``),
    ``""`` for one that is present but empty; the whole result is None when ``url`` is no URL.
    The authority ends at the first ``/``, ``?`` or ``#``, as urllib, redis-py and httpx read it.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or not re.fullmatch(r"[A-Za-z][A-Za-z0-9+.\-]*", scheme):
        return None
    rest, hash_, fragment = rest.partition("#")
    rest, qmark, query = rest.partition("?")
    cut = rest.find("/")
    authority, path = (rest, "") if cut < 0 else (rest[:cut], rest[cut:])
    userinfo, at, host = authority.rpartition("@")
    return (
        scheme,
        userinfo if at else None,
        host,
        path,
        query if qmark else None,
        fragment if hash_ else None,
    )


def _mask_query(query: str, *, drop: bool) -> str:
    """Mask (or drop) the values of secret-looking parameters, keeping the rest byte for byte."""
    if not query:
        return query
    parts = []
    for item in query.split("&"):
        name = unquote(item.split("=", 1)[0].replace("+", " "))
        if not is_secret_name(name):
            parts.append(item)
        elif not drop:
            parts.append(f"{item.split('=', 1)[0]}={REDACTED}")
    return "&".join(parts)


def redact_url(url: str) -> str:
    """``url`` with its userinfo replaced by ``***`` and secret query values masked.

    Anything that is not a URL comes back unchanged, and so does a URL with no secret in it.
    """
    parts = _split(url)
    if parts is None:
        return url
    scheme, userinfo, host, path, query, fragment = parts
    out = f"{scheme}://{'' if userinfo is None else REDACTED + '@'}{host}{path}"
    if query is not None:
        out += "?" + _mask_query(query, drop=False)
    if fragment is not None:
        out += "#" + (REDACTED if _fragment_secret(fragment) else fragment)
    return out


def _fragment_secret(fragment: str) -> bool:
    """OAuth-style fragments (``#access_token=...``) carry tokens."""
    return any(is_secret_name(item.split("=", 1)[0]) for item in fragment.split("&") if "=" in item)


def url_identity(url: str) -> str:
    """The secret-free identity of ``url``: no userinfo, no secret query parameters.

    Two URLs that differ only in their credentials have the same identity, so a persisted name
    built from it neither leaks nor changes when a password is rotated.
    """
    parts = _split(url)
    if parts is None:
        return url
    scheme, _, host, path, query, _ = parts
    kept = _mask_query(query or "", drop=True)
    return f"{scheme}://{host}{path}" + (f"?{kept}" if kept else "")


def strip_url_secrets(text: str) -> str:
    """``text`` with every URL in it replaced by its :func:`url_identity` (for persisted names)."""
    return _URL.sub(lambda m: url_identity(m.group(0)), text)


def url_secrets(url: str) -> list[str]:
    """The secret values inside ``url`` (password, user, secret query values), for redaction."""
    parts = _split(url)
    if parts is None:
        return []
    _, userinfo, _, _, query, fragment = parts
    found: list[str] = []
    if userinfo:
        user, _, password = userinfo.partition(":")
        secret = password or user  # a lone user part is a token (https://TOKEN@host)
        found += [secret, unquote(secret)] if secret else []
    for name, value in [*parse_qsl(query or ""), *parse_qsl(fragment or "")]:
        if value and is_secret_name(name):
            found.append(value)
    # the raw (still percent-encoded) spellings may appear in messages too
    return sorted({*found, *(quote(v, safe="") for v in found)}, key=len, reverse=True)


def redact_text(text: str, secrets: Iterable[str | None] = ()) -> str:
    """Hide credentials in a free-form message: every URL in it, known values, API keys.

    ``secrets`` are values known to be secret (a password, a storage key); each is replaced
    wherever it appears. Every URL's userinfo is masked whatever characters it holds, its
    secret query values too (:func:`redact_url`), and so is any other appearance of those
    values of 4 characters or more; ``sk-...`` keys and ``Bearer`` tokens are masked.
    """
    values = {s for s in secrets if s}
    found: set[str] = set()

    def userinfo(match: re.Match[str]) -> str:
        found.update(url_secrets(f"{match.group(1)}{match.group(2)}@host"))
        return f"{match.group(1)}{REDACTED}@"

    text = _USERINFO.sub(userinfo, text)
    for url in _URL.findall(text):
        found.update(url_secrets(url))
    text = _URL.sub(lambda m: redact_url(m.group(0)), text)
    values.update(v for v in found if len(v) >= _MIN_IMPLICIT)
    for value in sorted(values, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern in _BARE_SECRETS:
        text = pattern.sub(REDACTED, text)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a log record's message through :func:`redact_text` (third-party loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact, never drop."""
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, ()
        return True


_FILTER = RedactingFilter()


def redact_logs(*names: str) -> None:
    """Put the redacting filter on the named loggers (idempotent).

    HTTP clients log whole request URLs (httpx: ``HTTP Request: POST <url>`` at INFO), and a
    logger's own filters see exactly the records it creates.
    """
    for name in names:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def hostport(url: str) -> str:
    """Only the host and port of ``url`` (for log lines that must not even show the path)."""
    try:
        parsed = urlsplit(url)
        host, port = parsed.hostname, parsed.port
    except ValueError:
        return "(invalid URL)"
    if not host:
        return "(none)"
    host = f"[{host}]" if ":" in host else host
    return f"{host}:{port}" if port else host


__all__ = [
    "REDACTED",
    "RedactingFilter",
    "redact_logs",
    "hostport",
    "is_secret_name",
    "redact_text",
    "redact_url",
    "strip_url_secrets",
    "url_identity",
    "url_secrets",
]

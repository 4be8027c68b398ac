"""Storage options from the environment: explicit JSON, named env vars, and the standard AWS ones.

Three sources, first one wins per option:

1. ``LAKELOOM_STORAGE_OPTIONS`` (JSON object). A value may be a string or ``{"env": "NAME"}``,
   which reads the env var ``NAME`` at run time, so a config file can name a secret without
   holding it (the same idea as Dagster's ``EnvVar``).
2. For ``s3://`` roots, the usual variables: ``LAKELOOM_S3_ENDPOINT`` (else
   ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``), ``AWS_ACCESS_KEY_ID``,
   ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``LAKELOOM_S3_REGION`` (else ``AWS_REGION``
   / ``AWS_DEFAULT_REGION``), ``LAKELOOM_S3_ALLOW_HTTP`` (else ``AWS_ALLOW_HTTP``).
3. ``AWS_ALLOW_HTTP=true`` is implied by an ``http://`` endpoint (a local moto/MinIO server).

Option names are the delta-rs ones (upper case), which every lakeloom reader understands:
delta-rs, polars, pyarrow's S3 filesystem, obstore. This module imports nothing of lakeloom but
the redaction helpers (:mod:`lakeloom.storage.redact`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from lakeloom.storage.redact import REDACTED, redact_url, url_secrets

OPTIONS_ENV = "LAKELOOM_STORAGE_OPTIONS"

S3_ENV: dict[str, tuple[str, ...]] = {
    "AWS_ENDPOINT_URL": ("LAKELOOM_S3_ENDPOINT", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
    "AWS_ACCESS_KEY_ID": ("AWS_ACCESS_KEY_ID",),
    "AWS_SECRET_ACCESS_KEY": ("AWS_SECRET_ACCESS_KEY",),
    "AWS_SESSION_TOKEN": ("AWS_SESSION_TOKEN",),
    "AWS_REGION": ("LAKELOOM_S3_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"),
    "AWS_ALLOW_HTTP": ("LAKELOOM_S3_ALLOW_HTTP", "AWS_ALLOW_HTTP"),
}
"""Storage option → env vars read for it (in order) when the root is on S3."""

PUBLIC_OPTIONS = frozenset(
    {"AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ALLOW_HTTP", "AWS_S3_ADDRESSING_STYLE"}
)
"""Options whose values are not secret; every other value is masked when shown."""


class StorageOptionsError(ValueError):
    """``LAKELOOM_STORAGE_OPTIONS`` is malformed or names an env var that is not set."""


def is_s3(root: str) -> bool:
    """True for ``s3://`` and ``s3a://`` roots."""
    return root.startswith(("s3://", "s3a://"))


def parse_options(text: str | None, *, source: str = OPTIONS_ENV) -> dict[str, str]:
    """Parse the JSON of explicit options, resolving ``{"env": "NAME"}`` values."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError as exc:
        raise StorageOptionsError(f"{source} is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise StorageOptionsError(f"{source} must be a JSON object, got {type(raw).__name__}")
    return resolve_values(raw, source=source)


def resolve_values(raw: Mapping[str, Any], *, source: str = OPTIONS_ENV) -> dict[str, str]:
    """Turn option values into strings: ``{"env": "NAME"}`` reads ``NAME`` (it must be set)."""
    out: dict[str, str] = {}
    for name, value in raw.items():
        key = str(name).upper()
        if isinstance(value, Mapping) and set(value) == {"env"}:
            var = str(value["env"])
            if var not in os.environ:
                raise StorageOptionsError(
                    f"{source}: option {key} reads env var {var!r}, which is not set"
                )
            out[key] = os.environ[var]
        elif isinstance(value, str | int | float | bool) and not isinstance(value, Mapping):
            out[key] = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            raise StorageOptionsError(  # the type only: the value may be a secret
                f'{source}: option {key} must be a string or {{"env": "NAME"}}, '
                f"got a {type(value).__name__}"
            )
    return out


def env_options(root: str, explicit: Mapping[str, str] | None = None) -> dict[str, str]:
    """Complete ``explicit`` options for ``root`` from the standard env vars (S3 roots only)."""
    options = {str(k).upper(): str(v) for k, v in (explicit or {}).items()}
    if not is_s3(root):
        return options
    for option, names in S3_ENV.items():
        if option in options:
            continue
        for name in names:
            if os.environ.get(name):
                options[option] = os.environ[name]
                break
    endpoint = options.get("AWS_ENDPOINT_URL", "")
    if endpoint.startswith("http://") and "AWS_ALLOW_HTTP" not in options:
        options["AWS_ALLOW_HTTP"] = "true"
    return options


def masked(options: Mapping[str, str]) -> dict[str, str]:
    """Options with every value but the public ones replaced by ``***`` (for repr and logs).

    Public values are shown with any URL credentials masked (an endpoint may embed a key).
    """
    return {
        k: (redact_url(v) if k.upper() in PUBLIC_OPTIONS else REDACTED) for k, v in options.items()
    }


def secret_values(options: Mapping[str, str]) -> list[str]:
    """The option values that are secret, to hide wherever an error message repeats them."""
    found = [v for k, v in options.items() if k.upper() not in PUBLIC_OPTIONS and v]
    for value in options.values():
        found += url_secrets(value)
    return found

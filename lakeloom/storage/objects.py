"""Object-store clients built from delta-rs style storage options, with ``obstore``.

``obstore`` wraps the same Rust ``object_store`` crate that delta-rs commits through, so the
conditional-write probe exercises exactly what a Delta commit relies on, and the model store
reads and writes its files with the same endpoint, keys and HTTP settings as the Delta tables.
(``s3fs`` would need a ``botocore`` older than the one ``boto3`` pins here.)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

_S3_CONFIG = {
    "AWS_ENDPOINT_URL": "endpoint",
    "AWS_ENDPOINT": "endpoint",
    "AWS_ACCESS_KEY_ID": "access_key_id",
    "AWS_SECRET_ACCESS_KEY": "secret_access_key",
    "AWS_SESSION_TOKEN": "token",
    "AWS_REGION": "region",
    "AWS_DEFAULT_REGION": "region",
    "AWS_VIRTUAL_HOSTED_STYLE_REQUEST": "virtual_hosted_style_request",
    "AWS_SKIP_SIGNATURE": "skip_signature",
}
_TRUE = {"1", "true", "yes", "on"}


def s3_config(options: Mapping[str, str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split delta-rs S3 options into obstore's ``(config, client_options)``."""
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    for name, value in options.items():
        key = name.upper()
        if key in _S3_CONFIG:
            config.setdefault(_S3_CONFIG[key], value)
        elif key == "AWS_ALLOW_HTTP":
            client["allow_http"] = str(value).lower() in _TRUE
    return config, client


def bucket_and_prefix(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``."""
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.strip("/")


def s3_store(
    uri: str,
    options: Mapping[str, str],
    *,
    timeout_s: float | None = None,
    max_retries: int | None = None,
) -> Any:
    """An ``obstore`` S3 store rooted at ``uri`` (its paths are relative to the prefix)."""
    from obstore.store import S3Store

    config, client = s3_config(options)
    if timeout_s is not None:
        client["timeout"] = dt.timedelta(seconds=timeout_s)
        client["connect_timeout"] = dt.timedelta(seconds=timeout_s)
    retry = None
    if max_retries is not None:
        retry = {
            "max_retries": max_retries,
            "backoff": {"init_backoff": dt.timedelta(milliseconds=50), "base": 2.0},
            "retry_timeout": dt.timedelta(seconds=(timeout_s or 10.0) * (max_retries + 1)),
        }
    bucket, prefix = bucket_and_prefix(uri)
    return S3Store(
        bucket, prefix=prefix or None, config=config, client_options=client, retry_config=retry
    )


def s3_filesystem(options: Mapping[str, str]) -> Any:
    """An fsspec filesystem over S3 (paths ``bucket/key``) for file-shaped data (model files)."""
    from obstore.fsspec import FsspecStore

    config, client = s3_config(options)
    return FsspecStore("s3", config=config, client_options=client)

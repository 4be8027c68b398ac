"""Refuse object storage on which Delta commits could be silently lost.

delta-rs (1.6.6) commits version N by writing ``_delta_log/N.json`` with a conditional PUT
(``If-None-Match: *``): of two writers racing for N, the store must reject the second, which then
retries at N+1. A server that ignores the header lets both "succeed" and one commit vanishes
(seen with npm ``s3rver``: 4 writers x 5 commits all reported success, the table ended at
version 9). delta-rs no longer supports the DynamoDB lock that used to cover such stores, so
lakeloom checks once per process and endpoint/bucket, before its first write there: PUT a probe
object twice with ``If-None-Match: *`` and require the second PUT to fail with 412.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Mapping

from lakeloom.storage.env import is_s3, secret_values
from lakeloom.storage.objects import bucket_and_prefix, s3_store
from lakeloom.storage.redact import redact_text, redact_url

PROBE_DIR = "_lakeloom_probe"

_CHECKED: set[tuple[str, str]] = set()
_LOCK = threading.Lock()


class StorageCheckError(RuntimeError):
    """The storage root cannot be used safely (unreachable, or no conditional writes)."""


class ConditionalWritesUnsupported(StorageCheckError):
    """The object store accepted a second ``If-None-Match: *`` PUT of the same key."""


def check_conditional_writes(
    uri: str, options: Mapping[str, str], *, timeout_s: float = 10.0
) -> None:
    """PUT a probe object twice with ``If-None-Match: *``; the second must fail (412).

    Raises:
        ConditionalWritesUnsupported: the store accepted both PUTs.
        StorageCheckError: the store could not be reached or refused the first PUT.
    """
    import obstore
    from obstore.exceptions import AlreadyExistsError, PreconditionError

    store = s3_store(uri, options, timeout_s=timeout_s, max_retries=2)
    key = f"{PROBE_DIR}/{uuid.uuid4().hex}"
    where = f"{uri.rstrip('/')}/{key}"
    endpoint = redact_url(options.get("AWS_ENDPOINT_URL") or "the default AWS endpoint")
    secrets = secret_values(options)
    try:
        obstore.put(store, key, b"first", mode="create")
    except Exception as exc:
        first = redact_text(str(exc).splitlines()[0] if str(exc) else "", secrets)
        raise StorageCheckError(
            f"cannot write to {where} at {endpoint} ({type(exc).__name__}: "
            f"{first}); check the bucket, endpoint and keys "
            "(LAKELOOM_STORAGE_ROOT, LAKELOOM_STORAGE_OPTIONS, AWS_* variables)"
        ) from None  # the cause may repeat the options
    try:
        try:
            obstore.put(store, key, b"second", mode="create")
        except (AlreadyExistsError, PreconditionError):
            return  # 412 Precondition Failed: conditional writes are honoured
        except Exception as exc:
            first = redact_text(str(exc).splitlines()[0] if str(exc) else "", secrets)
            raise StorageCheckError(
                f"the second conditional PUT of {where} failed with {type(exc).__name__} "
                f"instead of 412 Precondition Failed: {first}"
            ) from None
        raise ConditionalWritesUnsupported(
            f"object storage at {endpoint} ignores 'If-None-Match: *': a second PUT of {where} "
            "succeeded instead of failing with 412 Precondition Failed. Delta commits there "
            "could be silently lost when two writers race for the same table version (delta-rs "
            "1.6.6 commits with conditional PUTs and has no DynamoDB lock any more). Use AWS S3, "
            "or an S3-compatible server that supports conditional writes (MinIO, Cloudflare R2, "
            "moto); refusing to write."
        )
    finally:
        with contextlib.suppress(Exception):  # best effort: a leftover probe is harmless
            obstore.delete(store, key)


def ensure_safe_storage(uri: str, options: Mapping[str, str] | None) -> None:
    """Run :func:`check_conditional_writes` once per process for each S3 endpoint and bucket.

    Local folders and non-S3 stores pass without a probe (delta-rs handles GCS/Azure
    preconditions natively).
    """
    if not is_s3(uri):
        return
    options = {k.upper(): v for k, v in (options or {}).items()}
    cache_key = (options.get("AWS_ENDPOINT_URL", ""), bucket_and_prefix(uri)[0])
    if cache_key in _CHECKED:
        return
    with _LOCK:
        if cache_key in _CHECKED:
            return
        check_conditional_writes(uri, options)
        _CHECKED.add(cache_key)

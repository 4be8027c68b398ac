"""Deterministic crash points for the crash-matrix tests: ``LAKELOOM_CRASH_AT``.

Set ``LAKELOOM_CRASH_AT=<point>`` (or ``<point>:<n>`` for the n-th time that point is reached,
default the first) and the process SIGKILLs itself right at that durable boundary, so a test
can rerun and check that nothing received was lost or paid twice, with no sleep-then-kill
timing. Unset (always, outside tests) this costs one comparison per call.

Points: ``journal_append`` (a response is on the journal, nothing committed),
``cache_commit`` (a flush is about to commit to Delta; its journal is intact),
``cache_committed`` (the flush is in Delta; its journal segment is not yet removed),
``before_ledger`` (responses durable in the cache, ledger not yet written), ``batch_created``
(a batch exists at the provider, its job is not yet logged ``created``), ``batch_submitted``
(the job is logged ``created``, not yet polled), ``batch_ended`` (the job is logged ``ended``,
nothing downloaded), ``batch_download`` (the first 64 KiB of a batch result file received, the
rest not), ``batch_merged`` (a job's answers are in the cache and it is logged ``merged``).
"""

from __future__ import annotations

import os
import signal

_SPEC = os.environ.get("LAKELOOM_CRASH_AT", "")
_POINT, _, _NTH = _SPEC.partition(":")
_COUNTS: dict[str, int] = {}


def crash_point(name: str) -> None:
    """SIGKILL this process when ``LAKELOOM_CRASH_AT`` names this point (and its count)."""
    if name != _POINT:
        return
    seen = _COUNTS[name] = _COUNTS.get(name, 0) + 1
    if seen >= int(_NTH or 1):
        os.kill(os.getpid(), signal.SIGKILL)

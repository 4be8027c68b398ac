"""Deterministic crash points for the crash-point tests: ``LAKELOOM_CRASH_AT=<point>``.

A test that must show "kill -9 at this durable boundary, rerun, nothing lost or paid twice" sets
``LAKELOOM_CRASH_AT`` in a worker process; when the code reaches :func:`crash_point` with that
name the process sends itself SIGKILL, exactly there (no sleeps, no races with a watcher). Several
points may be given, comma-separated. Unset, a crash point costs one environment lookup.

Points in use (grep ``crash_point(`` for the full list):

- ``batch_created``: a batch exists at the provider, its job is not yet logged ``created``.
- ``batch_ended``: the job is logged ``ended``, its output not yet downloaded.
- ``batch_download``: the output file's first bytes were received, the rest not.
"""

from __future__ import annotations

import os
import signal

ENV = "LAKELOOM_CRASH_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process when ``name`` is one of the points in ``LAKELOOM_CRASH_AT``."""
    wanted = os.environ.get(ENV)
    if wanted and name in (p.strip() for p in wanted.split(",")):
        os.kill(os.getpid(), signal.SIGKILL)

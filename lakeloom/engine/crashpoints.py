"""Alias of :mod:`lakeloom.engine.crash`, the one home of ``LAKELOOM_CRASH_AT`` crash points.

Two engineers added the same hook at once; this name stays until its last importer
(``engine/ledger.py``) imports ``lakeloom.engine.crash`` instead.
"""

from __future__ import annotations

from lakeloom.engine.crash import crash_point

__all__ = ["crash_point"]

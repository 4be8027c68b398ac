"""Counters of the simulator, served at ``GET /stats``.

Peaks are computed from 100 ms slots of admitted requests and counted tokens, so "peak in any
1-second window" is exact to within one slot; recording a request is two list additions.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

_SLOT_S = 0.1
_SLOTS_1S = 10
_SLOTS_60S = 600


class SimStats:
    """Everything the simulator has seen since start (or the last reset)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero every counter and restart the clock."""
        self.started_at = time.time()
        self._t0 = time.monotonic()
        self.counts: Counter[str] = Counter()
        self.endpoints: Counter[str] = Counter()
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.counted_tokens = 0
        self._slot_requests: list[int] = []
        self._slot_tokens: list[int] = []

    def admitted(self, cost: int) -> None:
        """Count a request that passed the limits and was charged ``cost`` tokens."""
        slot = int((time.monotonic() - self._t0) / _SLOT_S)
        reqs, toks = self._slot_requests, self._slot_tokens
        if slot >= len(reqs):
            grow = slot + 1 - len(reqs)
            reqs.extend([0] * grow)
            toks.extend([0] * grow)
        reqs[slot] += 1
        toks[slot] += cost
        self.counted_tokens += cost

    def snapshot(self) -> dict[str, Any]:
        """Return a JSON-ready view of the counters and the 1 s / 60 s peaks."""
        c = self.counts
        return {
            "started_at": self.started_at,
            "elapsed_s": round(time.monotonic() - self._t0, 3),
            "received": c["received"],
            "admitted": c["admitted"],
            "served": c["served"],
            "rejected_429": c["rejected_429_limit"] + c["rejected_429_injected"],
            "rejected_429_limit": c["rejected_429_limit"],
            "rejected_429_injected": c["rejected_429_injected"],
            "errors_5xx": c["errors_5xx"],
            "timeouts": c["timeouts"],
            "malformed": c["malformed"],
            "unauthorized": c["unauthorized"],
            "bad_requests": c["bad_requests"],
            "endpoints": dict(self.endpoints),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "counted_tokens": self.counted_tokens,
            "peak_requests_1s": _window_max(self._slot_requests, _SLOTS_1S),
            "peak_tokens_1s": _window_max(self._slot_tokens, _SLOTS_1S),
            "peak_requests_60s": _window_max(self._slot_requests, _SLOTS_60S),
            "peak_tokens_60s": _window_max(self._slot_tokens, _SLOTS_60S),
        }


def _window_max(slots: list[int], width: int) -> int:
    """Largest sum of ``width`` consecutive slots (a shorter run counts as one window)."""
    best = total = 0
    for i, value in enumerate(slots):
        total += value
        if i >= width:
            total -= slots[i - width]
        best = max(best, total)
    return best

"""Counters of the simulator, served at ``GET /stats``.

Peaks are computed from 100 ms slots of admitted requests and counted tokens, so "peak in any
1-second window" is exact to within one slot; recording a request is two list additions.
"""

from __future__ import annotations

import json
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
        self.billed: dict[str, dict[str, Counter[str]]] = {"online": {}, "batch": {}}
        self._answered: set[int] = set()
        self.answered_twice = 0

    def bill(self, channel: str, model: str, body: bytes, prompt: int, completion: int) -> None:
        """Count one answered (so billed) request by channel and model; repeats of a body count.

        ``body`` is the canonical request body: an identical request answered again, online or
        as a batch line, is a request paid twice (what the exactly-once tests assert on).
        """
        usage = self.billed[channel].setdefault(model, Counter())
        usage["requests"] += 1
        usage["prompt_tokens"] += prompt
        usage["completion_tokens"] += completion
        digest = hash(body)
        if digest in self._answered:
            self.answered_twice += 1
        else:
            self._answered.add(digest)

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
            "billed": {ch: {m: dict(u) for m, u in by.items()} for ch, by in self.billed.items()},
            "answered_unique": len(self._answered),
            "answered_twice": self.answered_twice,
            "peak_requests_1s": _window_max(self._slot_requests, _SLOTS_1S),
            "peak_tokens_1s": _window_max(self._slot_tokens, _SLOTS_1S),
            "peak_requests_60s": _window_max(self._slot_requests, _SLOTS_60S),
            "peak_tokens_60s": _window_max(self._slot_tokens, _SLOTS_60S),
        }


def body_key(body: dict[str, Any]) -> bytes:
    """The canonical bytes of a request body (sorted keys, compact, raw unicode): its identity."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _window_max(slots: list[int], width: int) -> int:
    """Largest sum of ``width`` consecutive slots (a shorter run counts as one window)."""
    best = total = 0
    for i, value in enumerate(slots):
        total += value
        if i >= width:
            total -= slots[i - width]
        best = max(best, total)
    return best

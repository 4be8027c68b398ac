"""Integer shares of a token total (largest remainder): the engine and the core split alike."""

from __future__ import annotations

import math
from collections.abc import Sequence


def apportion(total: int, weights: Sequence[int]) -> list[int]:
    """Split an integer total by weights so the parts sum exactly to it (largest remainder).

    Examples:
        >>> apportion(10, [1, 1, 1])
        [4, 3, 3]
    """
    if not weights:
        return []
    wsum = sum(max(w, 0) for w in weights)
    if wsum == 0:
        weights, wsum = [1] * len(weights), len(weights)
    raw = [total * max(w, 0) / wsum for w in weights]
    parts = [math.floor(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: -(raw[i] - parts[i]))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts

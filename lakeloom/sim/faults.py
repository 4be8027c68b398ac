"""Fault injection and latency for the simulator, drawn from one seeded RNG.

Faults are drawn per arrival, not per request body: a retry of a request that failed may
succeed, as with a real provider. The rates are independent slices of one uniform draw, so
``fail_429=0.1, fail_5xx=0.05`` gives 10 % 429s and 5 % 5xx on average.
"""

from __future__ import annotations

import random
from enum import StrEnum

from lakeloom.sim.config import LatencySpec, SimConfig


class Fault(StrEnum):
    """What goes wrong with one admitted request."""

    NONE = "none"
    RATE_LIMIT = "429"
    SERVER_ERROR = "5xx"
    TIMEOUT = "timeout"
    MALFORMED = "malformed"


class FaultInjector:
    """Decides each request's fault and latency from the configured rates."""

    def __init__(self, config: SimConfig) -> None:
        self.rng = random.Random(config.seed)
        self.latency = LatencySpec.parse(config.latency_ms)
        edges: list[tuple[float, Fault]] = []
        total = 0.0
        for rate, fault in (
            (config.fail_429, Fault.RATE_LIMIT),
            (config.fail_5xx, Fault.SERVER_ERROR),
            (config.timeout_rate, Fault.TIMEOUT),
            (config.malformed_rate, Fault.MALFORMED),
        ):
            if rate > 0:
                total += rate
                edges.append((total, fault))
        if total > 1.0 + 1e-9:
            raise ValueError(
                f"fail_429 + fail_5xx + timeout_rate + malformed_rate = {total:.3f} exceeds 1"
            )
        self._edges = edges

    def draw(self) -> Fault:
        """Draw the fault for the next admitted request (``Fault.NONE`` most of the time)."""
        if not self._edges:
            return Fault.NONE
        u = self.rng.random()
        for edge, fault in self._edges:
            if u < edge:
                return fault
        return Fault.NONE

    def server_error_status(self) -> int:
        """500 or 503, half and half."""
        return 500 if self.rng.random() < 0.5 else 503

    def delay_s(self) -> float:
        """Seconds of latency for the next response."""
        spec = self.latency
        if spec.kind == "fixed":
            return spec.a / 1000.0
        if spec.kind == "uniform":
            return self.rng.uniform(spec.a, spec.b) / 1000.0
        mu, sigma = spec.lognormal_params
        return self.rng.lognormvariate(mu, sigma) / 1000.0

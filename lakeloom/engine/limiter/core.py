"""The limiter's arithmetic: one pure function over a small state, shared by every backend.

The state is two GCRA "theoretical arrival times" (``tr`` for requests, ``tt`` for tokens: the
moment the bucket would be full again), the limits learned from headers, the provider's bucket
sizes, a pause (Retry-After) and an AIMD rate multiplier. ``decide`` applies the feedback
gathered since the last call, then reserves slots for a batch of waiting requests, in order,
no further ahead than a short horizon. The SQLite and in-memory stores run it in Python inside a
transaction; the Redis store runs a line-by-line Lua port (``lakeloom.engine.limiter.redis.LUA``).

The local bucket mirrors the provider's (same "fits, or bucket full" rule) but is smaller
(``burst_s`` of refill, at most ``burst_share`` of the provider's learned bucket) and refills at
``safety * multiplier`` of the limit, so a paced client never meets an empty provider bucket.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

NONE = -1.0  # "no value" in feedback fields (numbers only: the Lua port takes flat numbers)


@dataclass(frozen=True, slots=True)
class Tuning:
    """Knobs of the limiter (defaults aim at >= 95 % of a limit with almost no 429s)."""

    safety: float = 0.985  # aim at this fraction of the limit
    burst_s: float = 0.25  # local bucket: seconds of refill ...
    burst_share: float = 0.5  # ... and at most this share of the provider's bucket
    horizon_s: float = 0.05  # reserve slots at most this far ahead (re-read state after)
    backoff: float = 0.7  # rate multiplier cut on a 429 from the limit
    sync_backoff: float = 0.9  # gentler cut when the provider's own bucket is draining ...
    drain_share: float = 0.5  # ... i.e. reports less than this share of its size left
    drain_every_s: float = 0.5  # at most one drain cut this often, and only if still falling
    drain_cooldown_s: float = 2.0  # ... or still low after this long
    recovery_per_s: float = 0.05  # additive recovery of the multiplier per second ...
    recovery_fast_per_s: float = 0.5  # ... while the provider reports a comfortable bucket
    min_multiplier: float = 0.1
    default_pause_s: float = 1.0  # pause after a limit 429 that names no Retry-After
    max_pause_s: float = 60.0  # never pause longer than this on one 429

    def as_args(self) -> list[float]:
        """Flat numbers for the Lua port, in field order."""
        return [float(getattr(self, f.name)) for f in fields(self)]


@dataclass(slots=True)
class State:
    """Shared per-provider state (store-clock seconds; 0 = unknown)."""

    lr: float = 0.0  # learned requests per minute
    lt: float = 0.0  # learned tokens per minute
    cr: float = 0.0  # provider request bucket size (learned)
    ct: float = 0.0  # provider token bucket size (learned)
    tr: float = 0.0  # requests bucket full again at
    tt: float = 0.0  # tokens bucket full again at
    pu: float = 0.0  # paused until
    m: float = 1.0  # rate multiplier right after the last cut
    mc: float = 0.0  # time of the last cut (0 = never): 429s of requests granted before it
    ma: float = 0.0  # time ``m`` was last set (recovery counts from there)
    lv: float = 1.0  # provider fullness (vs. the drain threshold) at the last drain cut

    def as_row(self) -> tuple[float, ...]:
        """Column values in field order."""
        return tuple(getattr(self, f.name) for f in fields(self))


STATE_FIELDS = tuple(f.name for f in fields(State))


@dataclass(slots=True)
class Feedback:
    """What responses taught since the last ``decide`` (store-clock times; NONE = nothing)."""

    lr: float = NONE  # x-ratelimit-limit-requests
    lt: float = NONE  # x-ratelimit-limit-tokens
    cr: float = NONE  # provider request bucket size
    ct: float = NONE  # provider token bucket size
    sync_r_at: float = NONE  # grant time of the most constraining remaining-requests report
    sync_r_rem: float = NONE  # ... and the remaining requests it reported
    sync_t_at: float = NONE
    sync_t_rem: float = NONE
    extra_tokens: float = 0.0  # tokens counted minus reserved (negative: a refund)
    cut_at: float = NONE  # grant time of a request that met a limit 429
    pause_until: float = NONE

    def as_args(self) -> list[float]:
        """Flat numbers for the Lua port, in field order."""
        return [float(getattr(self, f.name)) for f in fields(self)]

    @property
    def empty(self) -> bool:
        """True when there is nothing to tell the store."""
        return self == _EMPTY


_EMPTY = Feedback()


@dataclass(slots=True)
class Decision:
    """Answer of one ``decide`` call."""

    now: float  # store clock
    waits: list[float] = field(default_factory=list)  # seconds to wait, per admitted request
    retry_in: float = 0.0  # when nothing was admitted: seconds until the head could go
    limited: bool = False  # some limit is known (False: admit freely)
    pause_until: float = 0.0
    multiplier: float = 1.0


def _multiplier(s: State, now: float, tu: Tuning) -> float:
    if s.ma <= 0:
        return 1.0
    return min(1.0, s.m + tu.recovery_per_s * (now - s.ma))


def _sync(tat: float, at: float, rem: float, bucket: float, rate: float) -> float:
    """Keep the local bucket no fuller than the provider said its own was (``rem`` at ``at``)."""
    if at == NONE or rem == NONE or rem >= bucket:
        return tat
    return max(tat, at + (bucket - rem) / rate)


def decide(
    s: State,
    now: float,
    costs: list[int],
    fb: Feedback,
    tu: Tuning,
    rpm: float | None,
    tpm: float | None,
) -> Decision:
    """Apply ``fb`` to ``s`` (in place), then reserve slots for ``costs`` (in order).

    Size exemption (over the 80-line rule, listed in tests/test_sizes.py): pure arithmetic
    over floats, ported line by line to Lua (``lakeloom.engine.limiter.redis.LUA``). One
    function here and one script there keep the two readable side by side; helpers would
    have to be mirrored as Lua functions taking and returning most of the state.
    """
    if fb.lr > 0:
        s.lr = fb.lr
    if fb.lt > 0:
        s.lt = fb.lt
    if fb.cr > 0:
        s.cr = fb.cr
    if fb.ct > 0:
        s.ct = fb.ct
    mult = _multiplier(s, now, tu)
    if fb.cut_at != NONE and fb.cut_at >= s.mc:
        s.m = mult = max(tu.min_multiplier, mult * tu.backoff)
        s.mc = s.ma = now
    if fb.pause_until != NONE:
        s.pu = max(s.pu, min(fb.pause_until, now + tu.max_pause_s))
    # clock jumps or a corrupt row must not freeze a provider for long
    s.tr = min(s.tr, now + 600.0)
    s.tt = min(s.tt, now + 600.0)
    s.pu = min(s.pu, now + tu.max_pause_s)
    limit_r = rpm or s.lr
    limit_t = tpm or s.lt
    out = Decision(now=now, limited=bool(limit_r or limit_t), pause_until=s.pu, multiplier=mult)
    rr = limit_r * tu.safety * mult / 60.0
    rt = limit_t * tu.safety * mult / 60.0
    br = bt = 0.0
    fill, fill_at = math.inf, NONE  # how full the provider said its buckets are (>= 1: fine)
    if limit_r:
        br = tu.burst_s * limit_r / 60.0
        br = min(br, tu.burst_share * s.cr) if s.cr > 0 else br
        s.tr = _sync(s.tr, fb.sync_r_at, fb.sync_r_rem, br, rr)
        if fb.sync_r_rem != NONE:
            fill, fill_at = fb.sync_r_rem / max(br, tu.drain_share * s.cr), fb.sync_r_at
    if limit_t:
        bt = tu.burst_s * limit_t / 60.0
        bt = min(bt, tu.burst_share * s.ct) if s.ct > 0 else bt
        s.tt = _sync(s.tt, fb.sync_t_at, fb.sync_t_rem, bt, rt)
        if fb.sync_t_rem != NONE:
            fill_t = fb.sync_t_rem / max(bt, tu.drain_share * s.ct)
            if fill_t < fill:
                fill, fill_at = fill_t, fb.sync_t_at
        if fb.extra_tokens > 0:
            s.tt = max(s.tt, now) + fb.extra_tokens / rt
        elif fb.extra_tokens < 0 and s.tt > now:  # a refund never overfills the bucket
            s.tt = max(now, s.tt + fb.extra_tokens / rt)
    # The provider's bucket draining while we pace means our token estimates run low (or
    # someone else shares the key): slow down before it runs dry, and again if it keeps falling
    # (or stays low for a cooldown). A bucket back above the threshold re-arms the detector.
    if fill_at == NONE:
        pass  # no report this time: nothing to judge
    elif fill >= 1.0:
        s.lv = 1.0
        if s.ma > 0 and fill_at >= s.mc and mult < 1.0:  # room to spare: recover fast
            s.m = out.multiplier = min(1.0, s.m + tu.recovery_fast_per_s * (now - s.ma))
            s.ma = now
    elif (
        fill_at >= s.mc
        and now - s.mc >= tu.drain_every_s
        and (fill < s.lv - 0.1 or now - s.mc >= tu.drain_cooldown_s)
    ):
        s.m = out.multiplier = max(tu.min_multiplier, mult * tu.sync_backoff)
        s.mc = s.ma = now
        s.lv = fill
    for cost in costs:
        t = max(now, s.pu)
        if limit_r:
            t = max(t, s.tr - max(0.0, (br - 1.0) / rr))
        if limit_t:
            t = max(t, s.tt - max(0.0, (bt - cost) / rt))
        if t - now > tu.horizon_s:
            out.retry_in = t - now
            break
        if limit_r:
            s.tr = max(s.tr, t) + 1.0 / rr
        if limit_t:
            s.tt = max(s.tt, t) + cost / rt
        out.waits.append(t - now)
    return out

"""Limiter state in Redis, for processes on many machines: ``LAKELOOM_LIMITER_URL=redis://...``.

One Lua script (a line-by-line port of ``limiter_core.decide``) runs atomically inside Redis on
the provider's hash, using the Redis server's clock, so there is no read-modify-write race and
no clock skew between machines. A PING at construction makes an unreachable Redis fail the run
at once; a Redis error later raises ``LimiterUnavailable`` instead of limiting per process.
"""

from __future__ import annotations

import asyncio

import redis
import redis.asyncio as aredis
from redis.exceptions import RedisError

from lakeloom.engine.limiter.core import STATE_FIELDS, Decision, Feedback, Tuning
from lakeloom.engine.limiter.stores import LimiterUnavailable, store_key
from lakeloom.storage.redact import redact_text, redact_url, url_secrets

KEY_PREFIX = "lakeloom:limiter:"
TTL_MS = 24 * 3600 * 1000  # forget a provider's state after a day without traffic

LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1e6
local names = {'lr','lt','cr','ct','tr','tt','pu','m','mc','ma','lv'}
local raw = redis.call('HMGET', KEYS[1], unpack(names))
local s = {}
for i, name in ipairs(names) do s[name] = tonumber(raw[i]) or 0 end
if raw[8] == false then s.m = 1 end
if raw[11] == false then s.lv = 1 end
local n = tonumber(ARGV[1])
local costs = {}
for i = 1, n do costs[i] = tonumber(ARGV[1 + i]) end
local a = 1 + n
local safety, burst_s, burst_share, horizon = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]),
  tonumber(ARGV[a+3]), tonumber(ARGV[a+4])
local backoff, sync_backoff = tonumber(ARGV[a+5]), tonumber(ARGV[a+6])
local drain_share, drain_every = tonumber(ARGV[a+7]), tonumber(ARGV[a+8])
local drain_cooldown = tonumber(ARGV[a+9])
local recovery, recovery_fast = tonumber(ARGV[a+10]), tonumber(ARGV[a+11])
local min_mult = tonumber(ARGV[a+12])
local max_pause = tonumber(ARGV[a+14])
a = a + 14
local fb_lr, fb_lt, fb_cr, fb_ct = tonumber(ARGV[a+1]), tonumber(ARGV[a+2]), tonumber(ARGV[a+3]),
  tonumber(ARGV[a+4])
local sr_at, sr_rem, st_at, st_rem = tonumber(ARGV[a+5]), tonumber(ARGV[a+6]), tonumber(ARGV[a+7]),
  tonumber(ARGV[a+8])
local extra, cut_at, pause_until = tonumber(ARGV[a+9]), tonumber(ARGV[a+10]), tonumber(ARGV[a+11])
local rpm, tpm = tonumber(ARGV[a+12]), tonumber(ARGV[a+13])
local NONE = -1

if fb_lr > 0 then s.lr = fb_lr end
if fb_lt > 0 then s.lt = fb_lt end
if fb_cr > 0 then s.cr = fb_cr end
if fb_ct > 0 then s.ct = fb_ct end
local mult = 1
if s.ma > 0 then mult = math.min(1, s.m + recovery * (now - s.ma)) end
if cut_at ~= NONE and cut_at >= s.mc then
  mult = math.max(min_mult, mult * backoff)
  s.m = mult
  s.mc = now
  s.ma = now
end
if pause_until ~= NONE then s.pu = math.max(s.pu, math.min(pause_until, now + max_pause)) end
s.tr = math.min(s.tr, now + 600)
s.tt = math.min(s.tt, now + 600)
s.pu = math.min(s.pu, now + max_pause)
local limit_r = rpm > 0 and rpm or s.lr
local limit_t = tpm > 0 and tpm or s.lt
local rr = limit_r * safety * mult / 60
local rt = limit_t * safety * mult / 60
local br, bt = 0, 0
local function sync(tat, at, rem, bucket, rate)
  if at == NONE or rem == NONE or rem >= bucket then return tat end
  return math.max(tat, at + (bucket - rem) / rate)
end
local fill, fill_at = math.huge, NONE
if limit_r > 0 then
  br = burst_s * limit_r / 60
  if s.cr > 0 then br = math.min(br, burst_share * s.cr) end
  s.tr = sync(s.tr, sr_at, sr_rem, br, rr)
  if sr_rem ~= NONE then
    fill = sr_rem / math.max(br, drain_share * s.cr)
    fill_at = sr_at
  end
end
if limit_t > 0 then
  bt = burst_s * limit_t / 60
  if s.ct > 0 then bt = math.min(bt, burst_share * s.ct) end
  s.tt = sync(s.tt, st_at, st_rem, bt, rt)
  if st_rem ~= NONE then
    local fill_t = st_rem / math.max(bt, drain_share * s.ct)
    if fill_t < fill then
      fill = fill_t
      fill_at = st_at
    end
  end
  if extra > 0 then
    s.tt = math.max(s.tt, now) + extra / rt
  elseif extra < 0 and s.tt > now then
    s.tt = math.max(now, s.tt + extra / rt)
  end
end
if fill_at ~= NONE then
  if fill >= 1 then
    s.lv = 1
    if s.ma > 0 and fill_at >= s.mc and mult < 1 then
      mult = math.min(1, s.m + recovery_fast * (now - s.ma))
      s.m = mult
      s.ma = now
    end
  elseif fill_at >= s.mc and now - s.mc >= drain_every
      and (fill < s.lv - 0.1 or now - s.mc >= drain_cooldown) then
    mult = math.max(min_mult, mult * sync_backoff)
    s.m = mult
    s.mc = now
    s.ma = now
    s.lv = fill
  end
end
local waits = {}
local retry_in = 0
for i = 1, n do
  local cost = costs[i]
  local at = math.max(now, s.pu)
  if limit_r > 0 then at = math.max(at, s.tr - math.max(0, (br - 1) / rr)) end
  if limit_t > 0 then at = math.max(at, s.tt - math.max(0, (bt - cost) / rt)) end
  if at - now > horizon then
    retry_in = at - now
    break
  end
  if limit_r > 0 then s.tr = math.max(s.tr, at) + 1 / rr end
  if limit_t > 0 then s.tt = math.max(s.tt, at) + cost / rt end
  waits[#waits + 1] = string.format('%.6f', at - now)
end
local flat = {}
for _, name in ipairs(names) do
  flat[#flat + 1] = name
  flat[#flat + 1] = string.format('%.17g', s[name])
end
redis.call('HSET', KEYS[1], unpack(flat))
redis.call('PEXPIRE', KEYS[1], ARGV[#ARGV])
local limited = (limit_r > 0 or limit_t > 0) and 1 or 0
return {string.format('%.6f', now), string.format('%.6f', retry_in), limited,
  string.format('%.6f', s.pu), string.format('%.6f', mult), waits}
"""
assert tuple(STATE_FIELDS) == ("lr", "lt", "cr", "ct", "tr", "tt", "pu", "m", "mc", "ma", "lv")


class RedisStore:
    """Limiter state in a Redis hash per provider key, updated by one atomic Lua script."""

    def __init__(self, url: str, *, connect_timeout_s: float = 2.0) -> None:
        self._url = url  # holds the password: never shown, see ``url``
        self.url = redact_url(url)
        self._secrets = url_secrets(url)
        self._timeout = connect_timeout_s
        try:
            with redis.Redis.from_url(
                url, socket_connect_timeout=connect_timeout_s, socket_timeout=connect_timeout_s
            ) as probe:
                probe.ping()
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(
                f"limiter state at {self.url} is unreachable ({self._safe(exc)}); refusing to "
                "run with per-process limits. Start Redis or unset LAKELOOM_LIMITER_URL."
            ) from None  # the cause's text and traceback locals may hold the password
        self._clients: dict[asyncio.AbstractEventLoop, aredis.Redis] = {}
        self._scripts: dict[asyncio.AbstractEventLoop, object] = {}

    def __repr__(self) -> str:
        return f"RedisStore({self.url!r})"

    def _safe(self, exc: BaseException) -> str:
        """The error's text with the URL's password (and any URL in it) masked."""
        return redact_text(f"{type(exc).__name__}: {exc}", self._secrets)

    def _script(self) -> object:
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            for old in [lp for lp in self._clients if lp.is_closed()]:
                self._clients.pop(old, None)
                self._scripts.pop(old, None)
            client = aredis.Redis.from_url(
                self._url, socket_connect_timeout=self._timeout, socket_timeout=self._timeout
            )
            self._clients[loop] = client
            script = self._scripts[loop] = client.register_script(LUA)
        return script

    async def exchange(
        self,
        key: str,
        costs: list[int],
        fb: Feedback,
        tuning: Tuning,
        rpm: float | None,
        tpm: float | None,
    ) -> Decision:
        """Run the Lua port of ``decide`` on ``key``'s hash."""
        args = [len(costs), *costs, *tuning.as_args(), *fb.as_args(), rpm or 0, tpm or 0, TTL_MS]
        try:
            script = self._script()
            out = await script(keys=[KEY_PREFIX + store_key(key)], args=args)  # type: ignore[operator]
        except (RedisError, OSError) as exc:
            raise LimiterUnavailable(
                f"limiter state at {self.url} failed: {self._safe(exc)}"
            ) from None
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Python 3.11's asyncio.wait_for (inside redis-py) returns the reply and drops a
            # cancel that lands as the reply arrives; a cancelled caller would run on forever
            raise asyncio.CancelledError
        now, retry_in, limited, pause_until, mult, waits = out
        return Decision(
            now=float(now),
            waits=[float(w) for w in waits],
            retry_in=float(retry_in),
            limited=bool(limited),
            pause_until=float(pause_until),
            multiplier=float(mult),
        )

    def close(self) -> None:
        """Forget the per-loop clients (their loops close their sockets)."""
        self._clients.clear()
        self._scripts.clear()

"""Parsing what providers say about their limits."""

from email.utils import formatdate

import pytest

from lakeloom.engine.limiter.headers import (
    parse_go_duration,
    parse_retry_after,
    read_bucket,
)
from lakeloom.sim.limits import go_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("120ms", 0.12), ("1h2m5.25s", 3725.25), ("8.64s", 8.64),
     ("17ms", 0.017), ("250us", 0.00025), ("3µs", 3e-6), ("0s", 0.0), ("20", 20.0), ("1.5", 1.5)],
)  # fmt: skip
def test_go_durations(text, seconds):
    assert parse_go_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", [None, "", "soon", "1x", "s1", "1s garbage", "-5", "nan", "1m-2s"])
def test_bad_durations_are_none_not_errors(text):
    assert parse_go_duration(text) is None


@pytest.mark.parametrize("seconds", [0.001, 0.5, 1, 59.5, 61, 3600, 5000.125])
def test_round_trip_with_the_simulator_formatter(seconds):
    assert parse_go_duration(go_duration(seconds)) == pytest.approx(seconds, abs=1e-3)


def test_retry_after_forms():
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "2"}) == 1.5
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "bogus"}) is None
    assert parse_retry_after({}) is None
    import time

    date = formatdate(time.time() + 30, usegmt=True)
    assert 27 < parse_retry_after({"retry-after": date}) <= 30


def test_bucket_report_infers_the_provider_bucket_size():
    headers = {
        "x-ratelimit-limit-requests": "600",
        "x-ratelimit-remaining-requests": "7",
        "x-ratelimit-reset-requests": "300ms",
        "x-ratelimit-limit-tokens": "200000",
    }
    reqs = read_bucket(headers, "requests")
    assert (reqs.limit, reqs.remaining, reqs.reset_s) == (600, 7, 0.3)
    assert reqs.capacity == pytest.approx(10)  # 7 left + 0.3 s * 10/s to refill
    toks = read_bucket(headers, "tokens")
    assert toks.limit == 200000 and toks.capacity is None
    assert read_bucket({}, "requests") is None
    assert read_bucket({"x-ratelimit-limit-requests": "lots"}, "requests") is None

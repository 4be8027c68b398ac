"""Server-side bucket math and header formatting, without HTTP."""

import pytest

from lakeloom.sim.limits import Bucket, ProviderLimits, go_duration


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.0004, "0s"), (0.001, "1ms"), (0.12, "120ms"), (1, "1s"), (1.5, "1.5s"),
     (59.999, "59.999s"), (60, "1m0s"), (360, "6m0s"), (90.5, "1m30.5s"), (3725.25, "1h2m5.25s")],
)  # fmt: skip
def test_go_duration_matches_go_formatting(seconds, text):
    assert go_duration(seconds) == text


def test_bucket_refills_continuously_and_caps():
    b = Bucket(600, burst_s=1.0)  # 10/s, capacity 10
    assert b.capacity == pytest.approx(10)
    b.level = 0
    b.updated = 100.0
    b.refill(100.35)
    assert b.level == pytest.approx(3.5)
    b.refill(200.0)
    assert b.level == pytest.approx(10)


def test_full_bucket_admits_a_request_larger_than_itself_then_is_in_debt():
    limits = ProviderLimits(rpm=0, tpm=6000, burst_s=1.0, count_rejected=True)  # 100 tok/s
    assert limits.admit(250).admitted  # larger than the 100-token bucket, but the bucket was full
    verdict = limits.admit(10)
    assert not verdict.admitted and verdict.kind == "tokens"
    # level is about -150: waiting for 10 tokens takes about 1.6 s
    assert verdict.retry_after_s == pytest.approx(1.6, abs=0.05)
    assert not limits.admit(7000).admitted and limits.admit(7000).too_large


def test_requests_bucket_rejects_and_counts_rejections():
    limits = ProviderLimits(rpm=600, tpm=0, burst_s=0.5, count_rejected=True)  # capacity 5
    verdicts = [limits.admit(1) for _ in range(8)]
    assert [v.admitted for v in verdicts] == [True] * 5 + [False] * 3
    assert verdicts[-1].kind == "requests"
    # three rejections each spent a slot: the bucket is at -3, so the next slot is 0.4 s away
    assert verdicts[-1].retry_after_s == pytest.approx(0.4, abs=0.02)
    headers = limits.headers()
    assert headers["x-ratelimit-limit-requests"] == "600"
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-reset-requests"] in ("800ms", "799ms")


def test_rejections_free_when_count_rejected_is_off():
    limits = ProviderLimits(rpm=600, tpm=0, burst_s=0.5, count_rejected=False)
    for _ in range(5):
        assert limits.admit(1).admitted
    for _ in range(50):
        assert not limits.admit(1).admitted
    limits.requests.updated -= 0.12  # 0.12 s pass on the bucket's clock (no sleep):
    # one slot refills in 0.1 s despite the 50 rejections
    assert limits.admit(1).admitted

"""The limiter's pure arithmetic (``decide``): pacing, sync, back-off, pause, clamps."""

import pytest

from lakeloom.engine.limiter.core import Feedback, State, Tuning, decide

EXACT = Tuning(safety=1.0, burst_s=0.5, horizon_s=100.0)  # no margin: easy numbers


def admit_times(state, costs, now=1000.0, tuning=EXACT, rpm=None, tpm=None, fb=None):
    d = decide(state, now, costs, fb or Feedback(), tuning, rpm, tpm)
    return [round(now + w, 6) for w in d.waits], d


def test_unknown_limits_admit_everything_now():
    times, d = admit_times(State(), [10, 10_000, 5])
    assert times == [1000.0] * 3 and not d.limited


def test_request_pacing_after_a_burst():
    # 600 rpm = 10/s, local bucket 0.5 s = 5 requests
    times, d = admit_times(State(), [1] * 8, rpm=600)
    assert d.limited
    assert times[:5] == [1000.0] * 5
    assert times[5:] == pytest.approx([1000.1, 1000.2, 1000.3])


def test_safety_margin_slows_the_pace():
    tuning = Tuning(safety=0.9, burst_s=0.1, horizon_s=100.0)  # bucket 1 request
    times, _ = admit_times(State(), [1] * 3, rpm=600, tuning=tuning)
    assert times[2] - times[1] == pytest.approx(1 / 9, abs=1e-5)


def test_token_bucket_admits_oversized_request_only_when_full():
    # 6000 tpm = 100 tokens/s, local bucket 50 tokens
    state = State()
    times, _ = admit_times(state, [200, 200, 20], tpm=6000)
    assert times == pytest.approx([1000.0, 1002.0, 1004.0 - 0.3])


def test_horizon_stops_reservations_and_reports_when_to_retry():
    tuning = Tuning(safety=1.0, burst_s=0.1, horizon_s=0.25)
    state = State()
    d = decide(state, 1000.0, [1] * 10, Feedback(), tuning, 600, None)
    assert len(d.waits) == 3  # now, +0.1, +0.2; +0.3 is beyond the horizon
    assert d.retry_in == pytest.approx(0.3)
    d2 = decide(state, 1000.3, [1], Feedback(), tuning, 600, None)
    assert d2.waits == [pytest.approx(0.0)]


def test_manual_limits_win_over_learned_ones():
    state = State()
    fb = Feedback(lr=60)
    times, _ = admit_times(state, [1] * 7, rpm=600, fb=fb)
    assert state.lr == 60  # remembered ...
    assert times[-1] - times[0] == pytest.approx(0.2)  # ... but 600 rpm paces
    times, _ = admit_times(State(lr=60), [1, 1], now=0.0)  # learned only: 1/s
    assert times[1] - times[0] == pytest.approx(1.0)


def test_remaining_header_pushes_the_local_bucket_down():
    state = State()
    admit_times(state, [1], rpm=600)  # local bucket 5 -> 4 left
    # the provider says only 1 request was left at that moment (someone else uses the key)
    fb = Feedback(sync_r_at=1000.0, sync_r_rem=1)
    times, _ = admit_times(state, [1, 1], now=1000.0, rpm=600, fb=fb)
    assert times == pytest.approx([1000.0, 1000.1])
    # a report with budget to spare changes nothing
    state2 = State()
    admit_times(state2, [1], rpm=600)
    before = state2.tr
    admit_times(state2, [], rpm=600, fb=Feedback(sync_r_at=1000.0, sync_r_rem=9))
    assert state2.tr == before


def test_provider_bucket_size_caps_the_local_burst():
    state = State()
    times, _ = admit_times(state, [1] * 4, rpm=600, fb=Feedback(cr=4))  # share 0.5 -> 2
    assert times == pytest.approx([1000.0, 1000.0, 1000.1, 1000.2])


def test_extra_tokens_are_charged():
    state = State()
    admit_times(state, [50], tpm=6000)  # bucket empty now
    times, _ = admit_times(state, [50], tpm=6000, fb=Feedback(extra_tokens=100))
    assert times == pytest.approx([1000.0 + 0.5 + 1.0])


def test_429_cuts_rate_once_per_epoch_then_recovers():
    tuning = Tuning(safety=1.0, burst_s=0.1, horizon_s=100.0, backoff=0.5, recovery_per_s=0.1)
    state = State()
    d = decide(state, 1000.0, [], Feedback(cut_at=999.0), tuning, 600, None)
    assert d.multiplier == 0.5 and state.mc == 1000.0
    # a second 429 from a request granted before the cut is the same episode
    d = decide(state, 1000.1, [], Feedback(cut_at=999.5), tuning, 600, None)
    assert d.multiplier == pytest.approx(0.51)
    # pace is now 5/s
    d = decide(state, 1000.1, [1, 1, 1], Feedback(), tuning, 600, None)
    assert d.waits[2] - d.waits[1] == pytest.approx(1 / (10 * 0.51))
    # a 429 for a request granted after the cut cuts again
    d = decide(state, 1001.0, [], Feedback(cut_at=1000.5), tuning, 600, None)
    assert d.multiplier == pytest.approx(0.6 * 0.5)
    d = decide(state, 1100.0, [], Feedback(), tuning, 600, None)
    assert d.multiplier == 1.0


def test_pause_delays_everything_even_without_limits():
    state = State()
    times, d = admit_times(state, [1], fb=Feedback(pause_until=1002.5))
    assert times == [1002.5] and d.pause_until == 1002.5


def test_absurd_state_is_clamped():
    state = State(tr=1e12, pu=1e12)
    tuning = Tuning(safety=1.0, burst_s=0.1, horizon_s=1e6)
    times, _ = admit_times(state, [1], rpm=600, tuning=tuning)
    assert times[0] <= 1000.0 + 600.0 + 0.1
    assert state.pu <= 1000.0 + Tuning().max_pause_s


def test_refund_of_overcounted_tokens_never_overfills():
    state = State()
    admit_times(state, [100], tpm=6000)  # 100 tok/s, bucket 50: 0.5 s of debt
    admit_times(state, [], tpm=6000, fb=Feedback(extra_tokens=-30))
    assert state.tt == pytest.approx(1000.0 + 1.0 - 0.3)
    admit_times(state, [], now=1005.0, tpm=6000, fb=Feedback(extra_tokens=-500))
    assert state.tt == pytest.approx(1000.7)  # already full: nothing to refund


def test_draining_provider_bucket_slows_us_before_any_429():
    tuning = Tuning(safety=1.0, burst_s=0.1, horizon_s=100.0, sync_backoff=0.9)
    state = State(ct=1000)  # provider bucket 1000 tokens: drain threshold 500

    def report(now, rem, at=None):
        fb = Feedback(sync_t_at=now - 0.01 if at is None else at, sync_t_rem=rem)
        return decide(state, now, [], fb, tuning, None, 60_000).multiplier

    assert report(10.0, 900) == 1.0  # comfortable
    assert report(10.1, 400) == pytest.approx(0.9)  # below half: slow down
    assert report(10.3, 300) == pytest.approx(0.9 + 0.05 * 0.2)  # too soon for another cut
    assert report(10.7, 360) == pytest.approx(0.93)  # not falling much since the cut: hold
    assert report(10.8, 250) == pytest.approx(0.9 * (0.9 + 0.05 * 0.7))  # falling: cut again
    m = state.m
    assert report(11.0, 100, at=10.5) == pytest.approx(m + 0.05 * 0.2)  # report predates the cut
    assert report(12.9, 240) == pytest.approx(0.9 * (m + 0.05 * 2.1))  # low for the cooldown
    assert report(13.0, 700) > 0.8 and state.lv == 1.0  # recovered: detector re-armed

"""Settings, latency distributions and the command line of the simulator."""

import subprocess
import sys

import pytest
from pydantic import ValidationError

from lakeloom.cli import build_parser
from lakeloom.sim.cli import config_from_args, to_argv
from lakeloom.sim.config import LatencySpec, SimConfig
from lakeloom.sim.faults import Fault, FaultInjector


@pytest.mark.parametrize(
    ("text", "kind"),
    [("0", "fixed"), ("fixed:5", "fixed"), ("20-80", "uniform"), ("uniform:1:2", "uniform"),
     ("lognormal:50:200", "lognormal")],
)  # fmt: skip
def test_latency_specs_parse(text, kind):
    assert LatencySpec.parse(text).kind == kind


@pytest.mark.parametrize("text", ["fast", "80-20", "lognormal:200:50", "-5"])
def test_bad_latency_names_the_setting(text):
    with pytest.raises(ValidationError, match="latency_ms"):
        SimConfig(latency_ms=text)


def test_lognormal_latency_hits_its_percentiles():
    faults = FaultInjector(SimConfig(latency_ms="lognormal:50:200", seed=3))
    draws = sorted(faults.delay_s() for _ in range(20_000))
    assert draws[10_000] == pytest.approx(0.050, rel=0.05)
    assert draws[19_000] == pytest.approx(0.200, rel=0.08)


def test_fault_rates_add_up_and_are_seeded():
    cfg = SimConfig(fail_429=0.1, fail_5xx=0.05, timeout_rate=0.02, malformed_rate=0.05, seed=9)
    a, b = FaultInjector(cfg), FaultInjector(cfg)
    seq = [a.draw() for _ in range(20_000)]
    assert [b.draw() for _ in range(20_000)] == seq  # same seed, same sequence
    share = {f: seq.count(f) / len(seq) for f in Fault}
    assert share[Fault.RATE_LIMIT] == pytest.approx(0.10, abs=0.01)
    assert share[Fault.SERVER_ERROR] == pytest.approx(0.05, abs=0.007)
    assert share[Fault.TIMEOUT] == pytest.approx(0.02, abs=0.005)
    assert share[Fault.MALFORMED] == pytest.approx(0.05, abs=0.007)
    with pytest.raises(ValueError, match="exceeds 1"):
        FaultInjector(SimConfig(fail_429=0.6, fail_5xx=0.6))


def test_cli_flags_map_to_config_and_back():
    args = build_parser().parse_args(
        ["sim", "--rpm", "600", "--tpm", "200000", "--port", "8377", "--embedding-dim", "64",
         "--fail-429", "0.1", "--latency-ms", "lognormal:50:200", "--no-count-rejected"]
    )  # fmt: skip
    cfg = config_from_args(args)
    assert (cfg.rpm, cfg.tpm, cfg.embedding_dim, cfg.fail_429) == (600, 200_000, 64, 0.1)
    assert cfg.count_rejected is False and cfg.burst_s == 1.0
    again = config_from_args(build_parser().parse_args(["sim", *to_argv(cfg)]))
    assert again == cfg
    assert "--api-key" not in to_argv(cfg.model_copy(update={"api_key": "k"}))


def test_invalid_flag_value_exits_with_a_clear_message():
    proc = subprocess.run(
        [sys.executable, "-m", "lakeloom.sim", "--fail-429", "1.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "fail_429" in proc.stderr

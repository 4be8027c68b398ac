import json

import polars as pl
import pytest

from lakeloom.engine.cost import (
    DEFAULT_MAX_OUTPUT,
    BudgetGuard,
    ModelPrice,
    PriceTable,
    UnknownModelError,
    worst_output_tokens,
)
from lakeloom.engine.ledger import CostLedger, ledger_rows
from lakeloom.engine.types import LLMResult, RunContext


def test_lookup_resolves_dated_snapshots_to_the_longest_family():
    table = PriceTable()
    assert table.get("gpt-4o-mini-2024-07-18") == table.get("gpt-4o-mini")
    assert table.get("gpt-4o-2024-08-06") == table.get("gpt-4o")
    assert table.get("gpt-4o").input > table.get("gpt-4o-mini").input
    assert table.get("sim-priced").output > 0
    assert table.get("sim-chat").input == 0
    assert table.version.startswith("2025")


def test_unknown_model_is_a_clear_error():
    with pytest.raises(UnknownModelError, match="'my-llm' has no price.*LAKELOOM_PRICES"):
        PriceTable().get("my-llm")


def test_overrides_from_dict_json_yaml_and_env(tmp_path, monkeypatch):
    assert PriceTable({"my-llm": {"input": 1, "output": 2}}).get("my-llm").output == 2
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"models": {"gpt-4o": {"input": 9, "output": 9}}}))
    table = PriceTable(path)
    assert table.get("gpt-4o").input == 9 and table.version.endswith("+p.json")
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("local-x:\n  input: 0\n  output: 0\n  context_window: 100\n")
    monkeypatch.setenv("LAKELOOM_PRICES", str(yaml_path))
    assert PriceTable().get("local-x").context_window == 100
    with pytest.raises(ValueError):
        PriceTable({"bad": {"input": -1, "output": 0}})
    with pytest.raises(ValueError):
        PriceTable({"bad": {"input": 1, "output": 0, "typo": 3}})


def test_cost_math():
    price = ModelPrice(input=2.0, output=8.0, cached_input=0.5)
    assert price.cost(input_tokens=1_000_000, output_tokens=0) == pytest.approx(2.0)
    assert price.cost(input_tokens=1000, output_tokens=1000, cached_tokens=400) == pytest.approx(
        (600 * 2 + 400 * 0.5 + 1000 * 8) / 1e6
    )
    assert price.batch_cost(input_tokens=1000, output_tokens=1000) == pytest.approx(
        (1000 * 1 + 1000 * 4) / 1e6
    )


def test_budget_guard_counts_in_flight_reservations():
    guard = BudgetGuard(max_cost_usd=1.0)
    assert guard.try_reserve(0.4) and guard.try_reserve(0.4)
    assert not guard.try_reserve(0.4)  # 0.8 reserved + 0.4 > 1.0, though nothing is spent yet
    assert guard.stopped and not guard.try_reserve(0.01)  # stays stopped
    guard.settle(0.4, 0.1)
    assert guard.committed_usd == pytest.approx(0.1) and guard.reserved_usd == pytest.approx(0.4)
    unlimited = BudgetGuard(None)
    assert all(unlimited.try_reserve(1e9) for _ in range(3))


def test_cost_cli_reports_the_ledger(storage, capsys):
    from lakeloom.cli import main
    from lakeloom.engine.ledger import CostLedger

    assert main(["cost"]) == 0
    assert "no spend recorded yet" in capsys.readouterr().out
    rows = [
        {
            "run_id": "r1",
            "asset": "labels",
            "partition": "2026-11-01",
            "model": "gpt-4o-mini",
            "requests": 10,
            "cache_hits": 4,
            "input_tokens": 1000,
            "output_tokens": 100,
            "cost_usd": 0.25,
        },
        {
            "run_id": "r2",
            "asset": "labels",
            "partition": "2026-11-02",
            "model": "gpt-4o-mini",
            "requests": 5,
            "cache_hits": 0,
            "input_tokens": 500,
            "output_tokens": 50,
            "cost_usd": 0.5,
        },
        {
            "run_id": "r2",
            "asset": "embeddings",
            "partition": "2026-11-02",
            "model": "text-embedding-3-small",
            "requests": 5,
            "cache_hits": 5,
            "cost_usd": 0.0,
        },
    ]
    CostLedger(storage).append(rows)
    assert main(["cost", "--by", "asset", "--json"]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[0] == {**out[0], "asset": "labels", "runs": 2, "requests": 15, "cost_usd": 0.75}
    assert main(["cost", "--by", "partition", "--asset", "labels"]) == 0
    text = capsys.readouterr().out
    assert "2026-11-02" in text and "total: $0.750000" in text
    assert main(["cost", "--prices"]) == 0
    assert "gpt-4o-mini" in capsys.readouterr().out


def test_every_attempt_is_reserved_and_uncertain_ones_stay_committed():
    guard = BudgetGuard(max_cost_usd=1.0)
    handle = guard.attempts(0.3)
    assert handle.reserve() and handle.reserve()  # the same open reservation, not two
    assert guard.reserved_usd == pytest.approx(0.3)
    handle.uncertain()  # timed out: may be billed, stays committed at its worst case
    assert (guard.committed_usd, guard.reserved_usd) == (pytest.approx(0.3), 0.0)
    assert handle.reserve()
    handle.uncertain()
    assert handle.reserve()
    handle.release()  # a 429: not billed
    assert guard.committed_usd == pytest.approx(0.6) and guard.uncertain_usd == pytest.approx(0.6)
    assert handle.reserve()
    handle.settle(0.1)
    assert guard.committed_usd == pytest.approx(0.7) and guard.reserved_usd == 0.0
    assert not guard.attempts(0.31).reserve() and guard.stopped  # 0.7 + 0.31 > 1.0


def test_budget_guard_starts_from_what_the_run_already_spent():
    guard = BudgetGuard(max_cost_usd=1.0, committed_usd=0.9)
    assert not guard.try_reserve(0.2) and guard.left_usd == pytest.approx(0.1)


def test_unbounded_chat_output_is_never_reserved_as_zero():
    bare = ModelPrice(input=1.0, output=4.0)
    assert worst_output_tokens(bare, 100, 0) == DEFAULT_MAX_OUTPUT
    assert worst_output_tokens(bare, 100, 64) == 64
    windowed = ModelPrice(input=1.0, output=4.0, context_window=8192)
    assert worst_output_tokens(windowed, 192, 0) == 8000
    capped = ModelPrice(input=1.0, output=4.0, context_window=8192, max_output=1024)
    assert worst_output_tokens(capped, 192, 0) == 1024


def _result(key: str, cost: float, tokens: int = 10) -> LLMResult:
    return LLMResult(
        key, "ok", input_tokens=tokens, output_tokens=tokens, cost_usd=cost, attempts=1, model="m"
    )


def test_ledger_rows_book_requests_to_their_partitions():
    context = RunContext(
        run_id="r", asset="a", row_partitions=["p1", "p1", "p2", "p3"]
    )  # a run over three partitions
    context.request_partitions = {"k1": {"p1": 1.0}, "k2": {"p2": 0.25, "p3": 0.75}}
    hits = pl.DataFrame({"key": ["k1"], "model": ["m"]})
    sent = [_result("k1", 0.4), _result("k2", 0.8, tokens=11), _result("k3", 1.0)]
    rows = ledger_rows("chat.completions", context, hits, sent, price_table="t")
    by = {r["partition"]: r for r in rows}
    assert set(by) == {"p1", "p2", "p3"}
    # k3 is unmapped: split by the run's rows per partition (1/2, 1/4, 1/4)
    assert by["p1"]["cost_usd"] == pytest.approx(0.4 + 0.5)
    assert by["p2"]["cost_usd"] == pytest.approx(0.2 + 0.25)
    assert by["p3"]["cost_usd"] == pytest.approx(0.6 + 0.25)
    assert sum(r["input_tokens"] for r in rows) == 31  # integer parts sum exactly
    assert sum(r["requests"] for r in rows) == 4 and by["p1"]["cache_hits"] == 1


def test_one_partition_run_books_its_key():
    context = RunContext(run_id="r", asset="a", partition="2025-03-01")
    rows = ledger_rows(
        "chat.completions", context, pl.DataFrame(), [_result("k", 0.1)], price_table="t"
    )
    assert [r["partition"] for r in rows] == ["2025-03-01"]


def test_a_dead_writers_spend_journal_is_booked_once(storage):
    ledger = CostLedger(storage)
    journal = ledger.journal({"run_id": "dead", "asset": "a", "endpoint": "e", "price_table": "t"})
    journal.add({"model": "m", "shares": {"p": 1.0}, "sent": 1, "ok": 1, "retries": 0,
                 "rate_limited": 0, "input_tokens": 5, "output_tokens": 7, "cost_usd": 0.25,
                 "uncertain_attempts": 1, "uncertain_usd": 0.5, "latency_s": 0.1})  # fmt: skip
    assert CostLedger(storage).recover() == 0  # its writer still holds it
    import os

    os.close(journal._fd)  # the writer dies: its lock goes with it
    journal._fd = None
    assert CostLedger(storage).recover() == 1
    assert CostLedger(storage).recover() == 0  # booked once
    booked = ledger.read()
    assert booked.select("run_id", "partition", "cost_usd", "uncertain_usd").rows() == [
        ("dead", "p", 0.25, 0.5)
    ]
    assert ledger.run_spend("dead") == pytest.approx(0.75)

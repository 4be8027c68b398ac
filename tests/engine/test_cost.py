import json

import pytest

from lakeloom.engine.cost import BudgetGuard, ModelPrice, PriceTable, UnknownModelError


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

"""The blocking wrappers cost nothing per result once the answers are in."""

from lakeloom.engine.keys import request_key
from lakeloom.engine.types import LLMRequest, LLMResult


def test_blocking_run_never_renders_its_results_as_text(sim_engine, monkeypatch):
    """asyncio.Runner formatted the finished main task (with its result) via repr, twice per
    blocking run: O(rows) string work, seconds for a cached re-run of a million rows."""
    sim, engine = sim_engine()
    calls: list[int] = []
    monkeypatch.setattr(LLMResult, "__repr__", lambda self: calls.append(1) or "LLMResult(...)")
    bodies = [{"model": "sim-embed", "input": f"text {i}"} for i in range(50)]
    requests = [LLMRequest(request_key("embeddings", b), "embeddings", b, 2) for b in bodies]
    results = engine.run(requests)
    assert [r.status for r in results] == ["ok"] * 50
    assert calls == []

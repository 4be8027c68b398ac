"""The API key never lands in logs, results, the cache, the journal or the ledger."""

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from lakeloom.engine.cache import ResponseCache
from lakeloom.engine.client import ProviderConfig
from lakeloom.engine.runner import Engine
from tests.fixtures.engine import chat_bodies

SECRET = "sk-test-DO-NOT-LEAK-4f9a1c"


@pytest.mark.parametrize("transport", ["aiohttp", "sdk"])
def test_api_key_never_written_anywhere(sim_server, caplog, capsys, transport):
    sim = sim_server(api_key=SECRET, fail_5xx=0.2, malformed_rate=0.1, seed=3)
    config = ProviderConfig(
        kind="openai",
        base_url=sim.base_url,
        api_key=SecretStr(SECRET),
        max_attempts=8,
        backoff_base_s=0.01,
        backoff_max_s=0.05,
        transport=transport,
    )
    assert SECRET not in repr(config) and SECRET not in str(config.model_dump())
    assert SECRET not in config.model_dump_json()
    lines: list[str] = []
    engine = Engine(config, progress=lines.append, progress_interval_s=0.1)
    cache = engine.cache
    assert isinstance(cache, ResponseCache)
    caplog.set_level(logging.DEBUG)  # openai, httpx, aiohttp, deltalake, lakeloom: everything
    run = engine.run_bodies("chat.completions", chat_bodies(40))
    assert run.stats.ok == 40 and sim.stats()["unauthorized"] == 0
    # a journal that was not yet flushed is also checked
    cache.append("f" * 32, "sim-chat", "chat.completions", '{"choices": []}', 1, 1)
    texts = [
        caplog.text,
        "\n".join(lines),
        str(run.results.to_dicts()),
        str(run.stats.as_metadata()),
        capsys.readouterr().out,
    ]
    assert all(SECRET not in t for t in texts)
    files = [p for p in Path(engine.storage.root).rglob("*") if p.is_file()]
    files += [p for p in cache.journal_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files) and any(p.suffix == ".jsonl" for p in files)
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path

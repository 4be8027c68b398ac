"""The API key never lands in logs, results, the cache, the journal or the ledger."""

import logging
from pathlib import Path

import pytest
from pydantic import SecretStr

from lakeloom.engine.cache.store import ResponseCache
from lakeloom.engine.provider import ProviderConfig
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


# -- issue 13.11: URL credentials (limiter URL, base URL) never leave the process -------------
REDIS_PASSWORD = "s3cr3t-REDIS-pw-77"
URL_PASSWORD = "pa55-BASEURL-91"
QUERY_KEY = "qk-API-KEY-in-query-53"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def redis_with_password(tmp_path_factory):
    """A private redis-server that requires ``REDIS_PASSWORD``; yields ``(url, port)``."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install -y redis-server)")
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--requirepass", REDIS_PASSWORD, "--dir", str(tmp_path_factory.mktemp("redis-pw"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        for _ in range(200):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64):  # -NOAUTH: it is up
                        break
            except OSError:
                proc.wait(timeout=0.05) if proc.poll() is not None else None
                import time

                time.sleep(0.05)
        yield f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0", port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _no_secret(*texts: object, secrets=(REDIS_PASSWORD, URL_PASSWORD, QUERY_KEY)) -> None:
    for text in texts:
        for secret in secrets:
            assert secret not in str(text), (secret, str(text)[:2000])


def test_redis_limiter_password_never_in_keys_logs_or_results(
    redis_with_password, sim_server, caplog, capsys, monkeypatch
):
    import redis

    url, port = redis_with_password
    monkeypatch.setenv("LAKELOOM_LIMITER_URL", url)
    sim = sim_server(rpm=6000, tpm=10_000_000)
    config = ProviderConfig(kind="compatible", base_url=sim.base_url, rpm=6000, max_attempts=2)
    caplog.set_level(logging.DEBUG)
    engine = Engine(config)
    run = engine.run_bodies("chat.completions", chat_bodies(20))
    assert run.results["status"].to_list() == ["ok"] * 20, run.results["error"].to_list()[:2]
    with redis.Redis(host="127.0.0.1", port=port, password=REDIS_PASSWORD) as client:
        keys = [k.decode() for k in client.keys("*")]
    assert keys == [f"lakeloom:limiter:compatible:{sim.base_url}"]  # the limiter was used
    files = [p for p in Path(engine.storage.root).rglob("*") if p.is_file()]
    assert "***@127.0.0.1" in repr(engine.limiter.store)
    _no_secret(
        caplog.text,
        capsys.readouterr(),
        run.results.to_dicts(),
        run.stats.as_metadata(),
        repr(engine.limiter.store),
        engine.limiter.store.url,
        keys,
        *(p.read_bytes() for p in files),
    )


def test_redis_limiter_errors_never_echo_the_password(redis_with_password, monkeypatch):
    from lakeloom.engine.limiter.factory import open_store
    from lakeloom.engine.limiter.stores import LimiterUnavailable

    url, port = redis_with_password
    wrong = f"redis://:{REDIS_PASSWORD}-wrong@127.0.0.1:{port}/0"
    with pytest.raises(LimiterUnavailable) as bad_password:
        open_store(wrong)
    dead = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{_free_port()}/0?password={REDIS_PASSWORD}"
    with pytest.raises(LimiterUnavailable) as unreachable:
        open_store(dead)
    with pytest.raises(ValueError, match="LAKELOOM_LIMITER_URL") as unknown:
        open_store(f"foo://:{REDIS_PASSWORD}@127.0.0.1/0")
    for exc in (bad_password, unreachable, unknown):
        import traceback

        text = "".join(traceback.format_exception(exc.value))
        assert "127.0.0.1" in text
        _no_secret(text)


@pytest.mark.parametrize(
    "secret_url",
    [f"http://user:{URL_PASSWORD}@127.0.0.1:9/v1", f"http://127.0.0.1:9/v1?api-key={QUERY_KEY}"],
)
def test_base_url_with_credentials_is_refused_without_echoing_them(secret_url):
    """HTTP clients log request URLs (httpx at INFO): credentials in base_url would leak there."""
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="base_url .* carries credentials") as refused:
        ProviderConfig(kind="compatible", base_url=secret_url)
    import traceback

    _no_secret("".join(traceback.format_exception(refused.value)))
    ok = ProviderConfig(kind="azure", base_url="https://x.example/?api-version=1", api_version="1")
    assert ok.limiter_key == "azure:https://x.example/?api-version=1"  # non-secret: unchanged


def test_limiter_keys_built_elsewhere_are_cleaned_before_they_are_stored(tmp_path):
    import asyncio
    import sqlite3

    from lakeloom.engine.limiter.factory import make_limiter

    with_query = f"http://127.0.0.1:9/v1?api-key={QUERY_KEY}"
    config = ProviderConfig(kind="compatible", base_url="http://127.0.0.1:9/v1",
                            provider_key=f"team:{with_query}")  # fmt: skip
    assert config.limiter_key == "team:http://127.0.0.1:9/v1"
    path = tmp_path / "limiter.sqlite"
    limiter = make_limiter(f"team:http://u:{URL_PASSWORD}@h/v1", rpm=60, url=f"sqlite:///{path}")
    assert limiter.key == "team:http://h/v1"
    asyncio.run(limiter.acquire(10))
    with sqlite3.connect(path) as conn:
        stored = [row[0] for row in conn.execute("SELECT key FROM limiter_state")]
    assert stored == ["team:http://h/v1"]
    _no_secret(path.read_bytes())


def test_llm_asset_with_a_password_in_limiter_url_leaks_nowhere_in_dagster(
    redis_with_password, sim_server, tmp_path, caplog, capfd
):
    """Materialization metadata, the event log, run records, Delta tables: no password."""
    import dagster as dg
    import polars as pl
    from pydantic import BaseModel

    from lakeloom.assets.factories import generated_asset
    from lakeloom.io_managers import DeltaIOManager
    from lakeloom.resources.llm import LLMResource

    url, _ = redis_with_password

    @dg.asset
    def notes() -> pl.DataFrame:
        return pl.DataFrame({"id": [f"n{i}" for i in range(6)], "text": ["fine"] * 6})

    class Label(BaseModel):
        label: str

    labels = generated_asset(
        "labels", notes, "Label: {text}", Label, key="id", model="gpt-4o-mini", retry_policy=None
    )
    sim = sim_server()
    root = tmp_path / "lake"
    caplog.set_level(logging.DEBUG)
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as instance:
        result = dg.materialize(
            [notes, labels],
            resources={
                "io_manager": DeltaIOManager(root=str(root), storage_options={}),
                "llm": LLMResource(base_url=sim.base_url, limiter_url=url, rpm=6000),
            },
            instance=instance,
        )
        assert result.success
        metadata = [str(m.metadata) for m in result.asset_materializations_for_node("labels")]
        events = [
            str(r.event_log_entry) for r in instance.get_records_for_run(result.run_id).records
        ]
    out, err = capfd.readouterr()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in files)
    _no_secret(caplog.text, out, err, *metadata, *events, *(p.read_bytes() for p in files))


def test_batch_jobs_table_records_the_provider_without_url_secrets(sim_engine):
    """The Batch API job log (a Delta table) names the provider by its cleaned limiter key."""
    from lakeloom.engine.batch.runner import BatchRunner, BatchSettings
    from lakeloom.engine.batch.store import BatchStore
    from lakeloom.engine.limiter.base import UnlimitedLimiter

    key = f"team:http://user:{URL_PASSWORD}@gw.example/v1?api-key={QUERY_KEY}"
    sim, engine = sim_engine(
        engine_limiter=UnlimitedLimiter(), batch_delay_s=0.2, provider_provider_key=key
    )
    runner = BatchRunner(engine, BatchSettings(poll_interval_s=0.1, poll_max_interval_s=0.3))
    run = runner.run_bodies("chat.completions", chat_bodies(5, model="sim-priced"))
    assert (run.results["status"] == "ok").all()
    table = BatchStore(engine.storage).read()
    assert table["provider"].unique().to_list() == ["team:http://gw.example/v1"]
    files = [p for p in Path(engine.storage.root).rglob("*") if p.is_file()]
    _no_secret(table.to_dicts(), *(p.read_bytes() for p in files))

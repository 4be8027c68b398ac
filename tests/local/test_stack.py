import json
import os

import pytest

from lakeloom.cli import main
from lakeloom.local import stack
from lakeloom.local.process import free_port, port_is_free


@pytest.fixture(autouse=True)
def _always_down():
    """Servers started by `up` are detached: stop them even when an assertion fails."""
    yield
    stack.down()


def test_bad_port_setting_is_named(monkeypatch):
    monkeypatch.setenv("LAKELOOM_EMBED_PORT", "eighty")
    with pytest.raises(ValueError, match="LAKELOOM_EMBED_PORT='eighty' is not a port"):
        stack.embed_config()


def test_down_never_kills_a_reused_pid(capsys):
    # A stale state file pointing at a live process that is not our server (this test's PID).
    info = stack.ServerInfo(
        role="llm", pid=os.getpid(), base_url="http://127.0.0.1:9/v1", model="m", log="x"
    )
    stack._write_state({"llm": info})
    assert stack.down() == []
    assert stack.read_state() == {}
    assert main(["local", "down"]) == 0
    assert "no local servers were running" in capsys.readouterr().out


@pytest.mark.slow
def test_up_is_idempotent_and_down_stops(monkeypatch, capsys):
    port = free_port()
    monkeypatch.setenv("LAKELOOM_LLM_PORT", str(port))
    assert main(["local", "up", "--only", "llm"]) == 0
    first = stack.read_state()["llm"]
    assert f"http://127.0.0.1:{port}/v1" in capsys.readouterr().out
    assert stack.is_healthy(first)

    assert main(["local", "up", "--only", "llm"]) == 0  # reuses the healthy server
    assert stack.read_state()["llm"].pid == first.pid
    capsys.readouterr()

    assert main(["local", "status"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["llm"]["healthy"] is True and status["llm"]["model"] == "smollm2-135m-instruct"

    assert main(["local", "down"]) == 0
    assert f"stopped llm (pid {first.pid})" in capsys.readouterr().out
    assert port_is_free("127.0.0.1", port)
    assert stack.read_state() == {}


@pytest.mark.slow
def test_up_reports_a_taken_port(monkeypatch, capsys, local_llm_server):
    taken, _ = local_llm_server
    monkeypatch.setenv("LAKELOOM_LLM_PORT", str(taken.port))
    assert main(["local", "up", "--only", "llm"]) == 1
    out = capsys.readouterr().out
    assert f"127.0.0.1:{taken.port} is already in use" in out and "LAKELOOM_LLM_PORT" in out
    assert stack.read_state() == {}

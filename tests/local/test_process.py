import os
import signal
import socket
import subprocess
import sys

import pytest

from lakeloom.local import process as process_module
from lakeloom.local.process import (
    LocalServerError,
    ManagedServer,
    PortInUseError,
    free_port,
    port_is_free,
)


def _http_server(port: int, tmp_path, **kw) -> ManagedServer:
    cmd = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    return ManagedServer(
        cmd,
        "http.server",
        "127.0.0.1",
        port,
        "/",
        log_path=tmp_path / "s.log",
        startup_timeout_s=kw.pop("startup_timeout_s", 20),
        **kw,
    )


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_start_answers_then_stop_ends_the_process_group(tmp_path):
    port = free_port()
    with _http_server(port, tmp_path) as server:
        pid = server.pid
        assert server.is_running()
        assert os.getpgid(pid) == pid  # its own process group
        assert not port_is_free("127.0.0.1", port)
    assert _gone(pid)
    assert port_is_free("127.0.0.1", port)


def test_taken_port_is_refused_before_anything_starts(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        server = _http_server(port, tmp_path, port_env_var="LAKELOOM_LLM_PORT")
        with pytest.raises(
            PortInUseError, match=rf"127.0.0.1:{port} is already in use.*LAKELOOM_LLM_PORT"
        ):
            server.start()
        assert server.pid is None
        assert not (tmp_path / "s.log").exists()


def test_a_server_that_dies_while_starting_reports_its_log(tmp_path):
    cmd = [sys.executable, "-c", "import sys; print('model file is corrupt'); sys.exit(3)"]
    server = ManagedServer(
        cmd, "broken", "127.0.0.1", free_port(), "/", log_path=tmp_path / "b.log"
    )
    with pytest.raises(LocalServerError, match=r"(?s)exited with code 3.*model file is corrupt"):
        server.start()
    assert server.pid is None


@pytest.fixture
def children(monkeypatch):
    """Every ``Popen`` the process module makes (to read how each child ended)."""
    made: list[subprocess.Popen] = []

    class Recorded(subprocess.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(process_module.subprocess, "Popen", Recorded)
    return made


def test_a_server_that_never_answers_times_out_and_is_stopped(tmp_path, children):
    cmd = [sys.executable, "-c", "import time; time.sleep(600)"]
    server = ManagedServer(cmd, "silent", "127.0.0.1", free_port(), "/", startup_timeout_s=1.0)
    with pytest.raises(LocalServerError, match="did not answer .* within 1 s"):
        server.start()
    assert server.pid is None
    # stopped by a signal, not waited for: the child would have slept for ten minutes
    (child,) = children
    assert child.returncode is not None and child.returncode < 0, child.returncode
    assert _gone(child.pid)


def test_sigterm_resistant_child_is_killed(tmp_path, children):
    port = free_port()
    code = (
        "import signal, http.server, socketserver\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        f"socketserver.TCPServer(('127.0.0.1', {port}), http.server.SimpleHTTPRequestHandler)"
        ".serve_forever()\n"
    )
    server = ManagedServer([sys.executable, "-c", code], "stubborn", "127.0.0.1", port, "/")
    server.start()
    pid = server.pid
    server.stop(grace_s=1.0)
    # it ignored SIGTERM, so stop() escalated to SIGKILL after the grace (never waits forever)
    (child,) = children
    assert child.returncode == -signal.SIGKILL
    assert _gone(pid)

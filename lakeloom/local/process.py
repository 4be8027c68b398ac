"""A local server as a child process: start it, wait until it answers, stop it for sure.

Both local model servers (llama.cpp and the embeddings server) are ordinary HTTP processes;
this module owns the parts that go wrong with them in practice: a port already taken (checked
before starting, so the error names the port instead of a crash log), a server that dies while
loading (its log tail is in the error), and children left behind (each server gets its own
process group, stopped with SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Self

OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


class LocalServerError(RuntimeError):
    """A local server could not be started, or stopped answering."""


class PortInUseError(LocalServerError):
    """The configured port is already bound by another process."""


def port_is_free(host: str, port: int) -> bool:
    """Tell whether nothing listens on ``host:port``, so we may bind it."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """Pick a port the OS considers free right now (for tests and ad-hoc servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def ensure_port_free(host: str, port: int, what: str, env_var: str | None = None) -> None:
    """Raise `PortInUseError` naming the port (and the setting that moves it) if it is taken."""
    if port_is_free(host, port):
        return
    hint = f" Set {env_var} to another port, or stop what listens there." if env_var else ""
    raise PortInUseError(f"cannot start {what}: {host}:{port} is already in use.{hint}")


def http_ok(url: str, timeout: float = 2.0) -> bool:
    """Tell whether a GET on ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (loopback URL)
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_process_group(pgid: int, grace_s: float = 10.0) -> bool:
    """SIGTERM the process group ``pgid``, SIGKILL it after ``grace_s``; True if it existed.

    Works whether or not the leader is our child: init reaps orphans, `_reap` reaps ours.
    """
    if not _signal_group(pgid, signal.SIGTERM):
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        _reap(pgid)
        if not _signal_group(pgid, 0):
            return True
        time.sleep(0.05)
    _signal_group(pgid, signal.SIGKILL)
    _reap(pgid)
    return True


def _reap(pid: int) -> None:
    """Collect ``pid`` if it is our exited child (a zombie leader keeps its group alive)."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False when no such group exists."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class ManagedServer:
    """One HTTP server process: ``start()`` waits for ``health_url``; ``stop()`` ends its group.

    Examples:
        >>> with ManagedServer(["python", "-m", "http.server", "8765"], "demo", "127.0.0.1",
        ...                    8765, "/") as server:  # doctest: +SKIP
        ...     print(server.base_url)
    """

    command: list[str]
    name: str
    host: str
    port: int
    health_path: str
    env: dict[str, str] = field(default_factory=dict)
    log_path: Path | None = None
    startup_timeout_s: float = 120.0
    port_env_var: str | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)
    _log: IO[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def base_url(self) -> str:
        """The server's root URL, e.g. ``http://127.0.0.1:8081``."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's PID (also its process-group id) while it runs."""
        return self._proc.pid if self._proc else None

    def start(self) -> Self:
        """Start the process and block until it answers, or raise with its log tail."""
        self.spawn()
        self.wait_ready()
        return self

    def spawn(self) -> Self:
        """Start the process without waiting (to boot several servers side by side)."""
        if self._proc is not None:
            raise LocalServerError(f"{self.name} is already started (pid {self._proc.pid})")
        ensure_port_free(self.host, self.port, self.name, self.port_env_var)
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command,
            env={**os.environ, **OFFLINE_ENV, **self.env},
            stdin=subprocess.DEVNULL,
            stdout=self._log or subprocess.DEVNULL,
            stderr=subprocess.STDOUT if self._log else subprocess.DEVNULL,
            start_new_session=True,
        )
        return self

    def wait_ready(self) -> None:
        """Block until the health URL answers 200; stop the process and raise if it never does."""
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self) -> None:
        if self._proc is None:
            raise LocalServerError(f"{self.name} was not started")
        url = self.base_url + self.health_path
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise LocalServerError(
                    f"{self.name} exited with code {code} while starting.{self._log_tail()}"
                )
            if http_ok(url, timeout=1.0):
                return
            time.sleep(0.2)
        raise LocalServerError(
            f"{self.name} did not answer {url} within {self.startup_timeout_s:.0f} s."
            f"{self._log_tail()}"
        )

    def _log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        tail = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return f"\nLast lines of {self.log_path}:\n" + "\n".join(tail)

    def detach(self) -> int:
        """Forget the child (it keeps running on its own) and return its PID, for state files."""
        if self._proc is None:
            raise LocalServerError(f"{self.name} was not started")
        pid = self._proc.pid
        self._proc.returncode = 0  # silence Popen's "still running" warning on garbage collection
        self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return pid

    def is_running(self) -> bool:
        """Tell whether the child process still lives."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop the whole process group (SIGTERM, then SIGKILL) and reap the child."""
        if self._proc is not None:
            # Our own child: wait on it (a zombie leader keeps its group "alive"), then make
            # sure nothing else in its group survives.
            _signal_group(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(self._proc.pid, signal.SIGKILL)
                self._proc.wait(timeout=grace_s)
            _signal_group(self._proc.pid, signal.SIGKILL)
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

"""Start the simulator from Python: in a subprocess (benchmarks, throughput tests) or a thread.

A subprocess has its own GIL, so the server never competes with the client under test; a thread
is quicker to start for small functional checks. Both return a ``SimHandle`` that is also a
context manager and always stops what it started.

Examples:
    >>> with start_subprocess(rpm=600, tpm=200_000) as sim:  # doctest: +SKIP
    ...     client = AsyncOpenAI(base_url=sim.base_url, api_key="sim")
    ...     sim.stats()["served"]
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

from lakeloom.sim.cli import READY_PREFIX, to_argv
from lakeloom.sim.config import SimConfig
from lakeloom.sim.server import API_KEY_ENV, new_event_loop, start


class SimHandle:
    """A running simulator: where it listens, its counters, and how to stop it."""

    def __init__(self, base_url: str, config: SimConfig) -> None:
        self.base_url = base_url
        self.root_url = base_url.removesuffix("/v1")
        self.config = config

    def stats(self) -> dict[str, Any]:
        """``GET /stats``."""
        with urllib.request.urlopen(self.root_url + "/stats", timeout=10) as resp:
            return json.loads(resp.read())

    def reset_stats(self, *, limits: bool = False) -> None:
        """``POST /stats/reset`` (``limits=True`` also refills the buckets)."""
        url = self.root_url + "/stats/reset" + ("?limits=1" if limits else "")
        with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
            pass

    def stop(self) -> None:
        """Stop the server (idempotent)."""

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class SubprocessSim(SimHandle):
    """A simulator in its own ``python -m lakeloom.sim`` process."""

    def __init__(self, base_url: str, config: SimConfig, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(base_url, config)
        self.proc = proc
        self.pid = proc.pid

    def stop(self) -> None:
        """Terminate the process, then kill it if it lingers."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class ThreadSim(SimHandle):
    """A simulator on an event loop in a daemon thread of this process."""

    def __init__(self, config: SimConfig) -> None:
        self._loop = new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._runner: Any = None
        self._thread = threading.Thread(target=self._run, name="lakeloom-sim", daemon=True)
        super().__init__("", config)
        self._thread.start()
        if not self._ready.wait(15) or self._error is not None:
            raise RuntimeError(f"simulator thread did not start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._runner, port = self._loop.run_until_complete(start(self.config))
        except BaseException as exc:  # reported to the starting thread
            self._error = exc
            self._ready.set()
            return
        self.base_url = f"http://{self.config.host}:{port}/v1"
        self.root_url = self.base_url.removesuffix("/v1")
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._runner.cleanup())
        self._loop.close()

    def stop(self) -> None:
        """Stop the loop and join the thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)


def _config(config: SimConfig | None, overrides: dict[str, Any]) -> SimConfig:
    base = config.model_dump() if config is not None else {"port": 0}
    return SimConfig(**{**base, **overrides})


def start_subprocess(
    config: SimConfig | None = None, *, timeout_s: float = 30.0, **overrides: Any
) -> SubprocessSim:
    """Start ``python -m lakeloom.sim`` on a free port and wait until it listens."""
    cfg = _config(config, {"port": 0, **overrides})
    env = dict(os.environ)
    if cfg.api_key:
        env[API_KEY_ENV] = cfg.api_key
    proc = subprocess.Popen(
        [sys.executable, "-m", "lakeloom.sim", *to_argv(cfg)],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout_s
    line = b""
    while not line.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0 or proc.poll() is not None:
            proc.kill()
            proc.wait()
            raise RuntimeError(
                f"simulator did not start within {timeout_s:.0f}s (exit code {proc.returncode})"
            )
        ready, _, _ = select.select([proc.stdout], [], [], min(left, 0.2))
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            line += chunk
            if not chunk:
                continue
    text = line.decode().strip()
    if not text.startswith(READY_PREFIX):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"unexpected simulator output: {text!r}")
    return SubprocessSim(text.removeprefix(READY_PREFIX), cfg, proc)


def start_thread(config: SimConfig | None = None, **overrides: Any) -> ThreadSim:
    """Start the simulator on a background thread (port 0 unless given)."""
    cfg = _config(config, overrides)
    return ThreadSim(cfg)

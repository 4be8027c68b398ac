"""Real local services for the scale profile: ``moto_server`` (S3) and ``redis-server``.

Both bind 127.0.0.1 on a port chosen here, run in their own process group, and are stopped by
PID (SIGTERM, then SIGKILL) when their context ends, so nothing outlives the demo, a test or a
benchmark. ``moto_server`` is the PyPI ``moto[server]`` console script next to this Python;
``redis-server`` is Debian's package (``apt-get install -y redis-server``).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lakeloom.local.process import LocalServerError, ManagedServer, free_port

BUCKET = "lakeloom"
ACCESS_KEY = "lakeloom-local"
SECRET_KEY = "lakeloom-local-secret"  # moto accepts any key; this one is only for moto


class ServiceMissing(LocalServerError):
    """The service's program is not installed."""


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3-compatible endpoint and the storage options that reach it."""

    url: str
    pid: int

    def storage_options(self) -> dict[str, str]:
        """delta-rs style options for this endpoint (local keys only moto accepts)."""
        return {
            "AWS_ENDPOINT_URL": self.url,
            "AWS_ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_REGION": "us-east-1",
        }

    def create_bucket(self, name: str = BUCKET) -> str:
        """Create ``name`` (idempotent) and return ``s3://name``."""
        import boto3

        client = boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
        )
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)
        return f"s3://{name}"


def moto_binary() -> str | None:
    """Path of ``moto_server`` (beside this interpreter first, then on PATH)."""
    beside = Path(sys.executable).with_name("moto_server")
    return str(beside) if beside.exists() else shutil.which("moto_server")


def redis_binary() -> str | None:
    """Path of ``redis-server`` (Debian package), or None."""
    return shutil.which("redis-server") or (
        "/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None
    )


@contextlib.contextmanager
def moto_server(port: int | None = None, log_path: Path | None = None) -> Iterator[S3Endpoint]:
    """Run ``moto_server -H 127.0.0.1 -p PORT`` (in memory) until the context ends."""
    binary = moto_binary()
    if binary is None:
        raise ServiceMissing("moto_server is not installed: pip install 'moto[server]==5.2.5'")
    port = port or free_port()
    server = ManagedServer(
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        "moto_server",
        "127.0.0.1",
        port,
        "/moto-api/",
        log_path=log_path,
        startup_timeout_s=30.0,
    )
    with server:
        assert server.pid is not None
        yield S3Endpoint(server.base_url, server.pid)


class RedisServer(ManagedServer):
    """``redis-server`` without persistence; ready when it answers PING."""

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise LocalServerError(f"redis-server exited while starting.{self._log_tail()}")
            if redis_ping(self.host, self.port):
                return
            time.sleep(0.05)
        raise LocalServerError(f"redis-server did not answer PING on port {self.port}")

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:PORT/0``."""
        return f"redis://{self.host}:{self.port}/0"


def redis_ping(host: str, port: int) -> bool:
    """Tell whether a Redis server answers PING on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def redis_process(port: int | None = None, workdir: Path | None = None) -> RedisServer:
    """A not-yet-started ``RedisServer`` (call ``start()``; ``stop()`` kills it by PID)."""
    binary = redis_binary()
    if binary is None:
        raise ServiceMissing("redis-server is not installed: apt-get install -y redis-server")
    port = port or free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
               "--appendonly", "no", "--daemonize", "no"]  # fmt: skip
    if workdir is not None:
        command += ["--dir", str(workdir)]
    return RedisServer(command, "redis-server", "127.0.0.1", port, "", startup_timeout_s=15.0)


@contextlib.contextmanager
def redis_server(port: int | None = None, workdir: Path | None = None) -> Iterator[RedisServer]:
    """Run ``redis-server --bind 127.0.0.1`` (no persistence) until the context ends."""
    with redis_process(port, workdir) as server:
        yield server

"""Drive ``dagster dev`` from a test: start it in its own session, talk GraphQL, stop it.

``dagster dev`` (webserver + daemon) is needed, not the webserver alone: with the queued run
coordinator of dagster.yaml only the daemon dequeues runs and evaluates sensors.
"""

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BIN = Path(sys.executable).parent

LAUNCH = """
mutation Launch($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename
    ... on LaunchRunSuccess { run { runId } }
    ... on PythonError { message }
    ... on InvalidSubsetError { message }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on UnauthorizedError { message }
  }
}
"""
RUN_STATUS = """
query Status($runId: ID!) {
  runOrError(runId: $runId) { __typename ... on Run { status } }
}
"""
REPOSITORIES = """
{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }
"""
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class DagsterDev:
    """A running ``dagster dev``: its URL, process (a session leader) and log file."""

    url: str
    proc: subprocess.Popen
    log_path: Path

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(
            self.url + "/graphql", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = json.loads(response.read())
        if payload.get("errors"):
            raise AssertionError(f"GraphQL errors: {payload['errors']}")
        return payload["data"]

    def launch(
        self,
        assets: list[str],
        tags: dict[str, str] | None = None,
        run_config: dict[str, Any] | None = None,
    ) -> str:
        """Launch one run of the asset job for ``assets``; return its run id."""
        [repo] = self.graphql(REPOSITORIES)["repositoriesOrError"]["nodes"]
        params = {
            "selector": {
                "repositoryLocationName": repo["location"]["name"],
                "repositoryName": repo["name"],
                "jobName": "__ASSET_JOB",
                "assetSelection": [{"path": [a]} for a in assets],
            },
            "runConfigData": run_config or {},
            "executionMetadata": {
                "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]
            },
        }
        result = self.graphql(LAUNCH, {"params": params})["launchRun"]
        assert result["__typename"] == "LaunchRunSuccess", result
        return result["run"]["runId"]

    def wait_run(self, run_id: str, timeout_s: float) -> str:
        """Poll the run's status until it is terminal (or the timeout); return the status."""
        deadline = time.monotonic() + timeout_s
        status = "?"
        while time.monotonic() < deadline:
            status = self.graphql(RUN_STATUS, {"runId": run_id})["runOrError"]["status"]
            if status in TERMINAL:
                return status
            time.sleep(1.0)
        return status

    def stop(self) -> None:
        """SIGTERM the whole process group (webserver, daemon, code servers), then SIGKILL."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        with contextlib.suppress(ProcessLookupError):  # children that outlived the leader
            os.killpg(self.proc.pid, signal.SIGKILL)


def start_dagster_dev(
    module: str,
    env: dict[str, str],
    log_path: Path,
    cwd: Path,
    *,
    port: int | None = None,
    timeout_s: float = 120.0,
) -> DagsterDev:
    """Start ``dagster dev -m module`` on 127.0.0.1 (a free port by default); wait for it."""
    port = port or free_port()
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(BIN / "dagster"), "dev", "-m", module, "-h", "127.0.0.1", "-p", str(port)],
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    dev = DagsterDev(url=f"http://127.0.0.1:{port}", proc=proc, log_path=log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"dagster dev exited ({proc.returncode}); see {log_path}")
        try:
            with urllib.request.urlopen(dev.url + "/server_info", timeout=2):
                pass
            dev.graphql(REPOSITORIES)  # the code location has loaded
            return dev
        except (urllib.error.URLError, ConnectionError, OSError, AssertionError, KeyError):
            time.sleep(0.5)
    dev.stop()
    raise RuntimeError(f"dagster dev did not answer within {timeout_s:.0f}s; see {log_path}")

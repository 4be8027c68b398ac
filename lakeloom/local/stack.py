"""``lakeloom local up`` / ``down``: both local model servers as background processes.

The servers outlive the command that starts them (``make demo`` starts them once, Dagster runs
use them, ``make demo`` or the user stops them), so their PIDs, ports and logs go to a state file
under the project's data folder. ``up`` is idempotent (a healthy server is reused), ``down``
stops only processes whose command line is the server we started (PIDs get reused).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from lakeloom.local.embed_server import (
    DEFAULT_EMBED_PORT,
    EMBED_PORT_ENV,
    EmbedServerConfig,
    embed_server,
)
from lakeloom.local.llama_server import (
    DEFAULT_LLM_PORT,
    LLM_PORT_ENV,
    LlamaServerConfig,
    llama_server,
)
from lakeloom.local.models import DEFAULT_LLM
from lakeloom.local.process import ManagedServer, http_ok, stop_process_group
from lakeloom.storage.settings import data_dir

Role = Literal["llm", "embeddings"]
ROLES: tuple[Role, ...] = ("llm", "embeddings")
LLM_MODEL_ENV = "LAKELOOM_LOCAL_LLM"
_MARKERS: dict[Role, str] = {
    "llm": "lakeloom.local.llama_entry",
    "embeddings": "lakeloom.local.embed_app",
}


class ServerInfo(BaseModel):
    """A running local server as recorded in the state file."""

    model_config = ConfigDict(frozen=True)

    role: Role
    pid: int
    base_url: str
    model: str
    log: str


def state_dir() -> Path:
    """Where the state file and server logs live (``<data_dir>/local``)."""
    path = data_dir() / "local"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _port(env_var: str, default: int) -> int:
    raw = os.environ.get(env_var)
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{env_var}={raw!r} is not a port number") from None


def llm_config() -> LlamaServerConfig:
    """The local LLM server's settings from ``LAKELOOM_LLM_PORT`` and ``LAKELOOM_LOCAL_LLM``."""
    return LlamaServerConfig(
        model=os.environ.get(LLM_MODEL_ENV) or DEFAULT_LLM,
        port=_port(LLM_PORT_ENV, DEFAULT_LLM_PORT),
    )


def embed_config() -> EmbedServerConfig:
    """The local embeddings server's settings from ``LAKELOOM_EMBED_PORT``."""
    return EmbedServerConfig(port=_port(EMBED_PORT_ENV, DEFAULT_EMBED_PORT))


def _state_file() -> Path:
    return state_dir() / "servers.json"


def read_state() -> dict[Role, ServerInfo]:
    """The servers recorded as started (alive or not)."""
    path = _state_file()
    if not path.exists():
        return {}
    raw = json.loads(path.read_text())
    return {role: ServerInfo.model_validate(info) for role, info in raw.items()}


def _write_state(state: dict[Role, ServerInfo]) -> None:
    path = _state_file()
    if not state:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({r: i.model_dump() for r, i in state.items()}, indent=2))
    tmp.replace(path)


def _is_ours(info: ServerInfo) -> bool:
    """True when ``info.pid`` still runs the server we started (not a reused PID)."""
    try:
        cmdline = Path(f"/proc/{info.pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False
    return _MARKERS[info.role] in cmdline


def is_healthy(info: ServerInfo) -> bool:
    """True when the recorded server process lives and answers its health URL."""
    root = info.base_url.removesuffix("/v1")
    path = "/v1/models" if info.role == "llm" else "/health"
    return _is_ours(info) and http_ok(root + path)


def up(roles: tuple[Role, ...] = ROLES) -> dict[Role, ServerInfo]:
    """Start the servers not already running (in parallel), record them, return them all."""
    state = read_state()
    starting: dict[Role, tuple[ManagedServer, str, str]] = {}
    for role in roles:
        if role in state and is_healthy(state[role]):
            continue
        log = state_dir() / f"{role}.log"
        if role == "llm":
            cfg = llm_config()
            server, url, model = llama_server(cfg, log), cfg.base_url, cfg.served_alias
        else:
            ecfg = embed_config()
            server, url, model = embed_server(ecfg, log), ecfg.base_url, ecfg.name
        starting[role] = (server.spawn(), url, model)
    try:
        for role, (server, url, model) in starting.items():
            server.wait_ready()
            log = str(server.log_path)
            state[role] = ServerInfo(
                role=role, pid=server.detach(), base_url=url, model=model, log=log
            )
    except BaseException:
        for server, _, _ in starting.values():
            server.stop()
        raise
    finally:
        _write_state(state)
    return {role: state[role] for role in roles}


def down(roles: tuple[Role, ...] = ROLES) -> list[ServerInfo]:
    """Stop the recorded servers (SIGTERM, then SIGKILL); return those that were stopped."""
    state = read_state()
    stopped = []
    for role in roles:
        info = state.pop(role, None)
        if info is not None and _is_ours(info) and stop_process_group(info.pid):
            stopped.append(info)
    _write_state(state)
    return stopped

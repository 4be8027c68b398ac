"""``lakeloom local ...``: start, stop and inspect the local model servers."""

from __future__ import annotations

import argparse
import json
import signal
import threading
from typing import Any

from lakeloom.local import stack
from lakeloom.local.embed_server import EmbedServerConfig, embed_server
from lakeloom.local.llama_server import LlamaServerConfig, llama_server
from lakeloom.local.models import LOCAL_LLMS, ModelNotInstalledError, minilm_path
from lakeloom.local.process import LocalServerError, ManagedServer


def register(subparsers: Any) -> None:
    """Add ``lakeloom local`` and its subcommands."""
    local = subparsers.add_parser("local", help="local models: llama.cpp + MiniLM servers")
    sub = local.add_subparsers(dest="local_command", required=True)

    p_up = sub.add_parser("up", help="start both servers in the background (idempotent)")
    p_up.add_argument("--only", choices=stack.ROLES, help="start just one of them")
    p_up.set_defaults(func=_up)

    p_down = sub.add_parser("down", help="stop the servers started by `up`")
    p_down.add_argument("--only", choices=stack.ROLES, help="stop just one of them")
    p_down.set_defaults(func=_down)

    sub.add_parser("status", help="print the recorded servers and their health").set_defaults(
        func=_status
    )
    sub.add_parser("models", help="show where the local model files are").set_defaults(func=_models)

    p_llm = sub.add_parser("serve-llm", help="run the llama.cpp server in the foreground")
    p_llm.add_argument("--model", choices=sorted(LOCAL_LLMS), default=None)
    p_llm.add_argument("--host", default="127.0.0.1")
    p_llm.add_argument("--port", type=int, default=None)
    p_llm.add_argument("--n-ctx", type=int, default=2048)
    p_llm.add_argument("--threads", type=int, default=2)
    p_llm.set_defaults(func=_serve_llm)

    p_emb = sub.add_parser("serve-embeddings", help="run the embeddings server in the foreground")
    p_emb.add_argument("--host", default="127.0.0.1")
    p_emb.add_argument("--port", type=int, default=None)
    p_emb.add_argument("--batch-size", type=int, default=64)
    p_emb.add_argument("--threads", type=int, default=None)
    p_emb.set_defaults(func=_serve_embeddings)


def _roles(args: argparse.Namespace) -> tuple[stack.Role, ...]:
    return (args.only,) if args.only else stack.ROLES


def _up(args: argparse.Namespace) -> int:
    try:
        servers = stack.up(_roles(args))
    except (LocalServerError, ModelNotInstalledError, ValueError) as exc:
        print(f"lakeloom local up: {exc}")
        return 1
    for info in servers.values():
        print(
            f"{info.role:10s} {info.base_url}  model={info.model}  pid={info.pid}  log={info.log}"
        )
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = stack.down(_roles(args))
    for info in stopped:
        print(f"stopped {info.role} (pid {info.pid})")
    if not stopped:
        print("no local servers were running")
    return 0


def _status(_: argparse.Namespace) -> int:
    report = {
        role: {**info.model_dump(), "healthy": stack.is_healthy(info)}
        for role, info in stack.read_state().items()
    }
    print(json.dumps(report, indent=2))
    return 0


def _models(_: argparse.Namespace) -> int:
    rows: dict[str, str] = {}
    try:
        rows["all-MiniLM-L6-v2"] = str(minilm_path())
    except ModelNotInstalledError as exc:
        rows["all-MiniLM-L6-v2"] = f"missing: {exc}"
    for name, spec in LOCAL_LLMS.items():
        try:
            rows[name] = str(spec.locate())
        except ModelNotInstalledError as exc:
            rows[name] = f"missing: {exc}"
    for name, where in rows.items():
        print(f"{name:24s} {where}")
    return 0


def _serve_foreground(server: ManagedServer, url: str, model: str) -> int:
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    try:
        with server:
            print(f"serving {model} at {url} (Ctrl-C to stop)", flush=True)
            while not done.wait(0.5):
                if not server.is_running():
                    print(f"{server.name} exited")
                    return 1
    except KeyboardInterrupt:
        pass
    except (LocalServerError, ModelNotInstalledError) as exc:
        print(f"lakeloom local: {exc}")
        return 1
    return 0


def _serve_llm(args: argparse.Namespace) -> int:
    env = stack.llm_config()
    cfg = LlamaServerConfig(
        model=args.model or env.model,
        host=args.host,
        port=args.port or env.port,
        n_ctx=args.n_ctx,
        n_threads=args.threads,
    )
    try:
        server = llama_server(cfg, stack.state_dir() / "serve-llm.log")
    except ModelNotInstalledError as exc:
        print(f"lakeloom local: {exc}")
        return 1
    return _serve_foreground(server, cfg.base_url, cfg.served_alias)


def _serve_embeddings(args: argparse.Namespace) -> int:
    cfg = EmbedServerConfig(
        host=args.host,
        port=args.port or stack.embed_config().port,
        batch_size=args.batch_size,
        threads=args.threads,
    )
    server = embed_server(cfg, stack.state_dir() / "serve-embeddings.log")
    return _serve_foreground(server, cfg.base_url, cfg.name)

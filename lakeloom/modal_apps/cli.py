"""``lakeloom modal deploy <tei|vllm|train>`` and ``lakeloom modal status``.

``deploy`` checks credentials locally first, then runs ``modal deploy -m <module>`` with this
environment (so ``LAKELOOM_MODAL_*`` settings shape the deployed app). ``status`` prints each
app's resolved settings and, when credentials exist, whether it is deployed and its URL.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from collections.abc import Callable

from lakeloom.modal_apps.config import (
    ModalConfigError,
    ServingConfig,
    TEIConfig,
    TrainConfig,
    VLLMConfig,
)
from lakeloom.modal_apps.credentials import ModalCredentialsError, credentials_source
from lakeloom.storage.redact import redact_text, redact_url

APPS: dict[str, tuple[str, type[TEIConfig] | type[VLLMConfig] | type[TrainConfig]]] = {
    "tei": ("lakeloom.modal_apps.tei", TEIConfig),
    "vllm": ("lakeloom.modal_apps.vllm", VLLMConfig),
    "train": ("lakeloom.modal_apps.train", TrainConfig),
}
#: The function whose deployment ``status`` checks, per app.
PROBE_FUNCTION = {"tei": "serve", "vllm": "serve", "train": "run_fold"}


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``lakeloom modal ...`` to the CLI."""
    parser = subparsers.add_parser("modal", help="deploy and inspect the Modal GPU apps")
    sub = parser.add_subparsers(dest="modal_command", required=True)
    deploy = sub.add_parser("deploy", help="deploy one app with `modal deploy`")
    deploy.add_argument("app", choices=sorted(APPS), help="which app")
    deploy.add_argument("-e", "--env", default=None, help="Modal environment")
    deploy.add_argument(
        "--dry-run", action="store_true", help="print the command and settings, deploy nothing"
    )
    deploy.set_defaults(func=deploy_command)
    status = sub.add_parser("status", help="settings, credentials and deployments of the apps")
    status.add_argument("-e", "--env", default=None, help="Modal environment")
    status.add_argument("--offline", action="store_true", help="do not contact Modal")
    status.set_defaults(func=status_command)


def deploy_argv(app: str, env: str | None) -> list[str]:
    """Return the ``modal deploy`` command line for ``app``."""
    argv = [sys.executable, "-m", "modal", "deploy", "-m", APPS[app][0]]
    return [*argv, "--env", env] if env else argv


def _settings(app: str) -> str:
    cfg = APPS[app][1].from_env()
    fields = cfg.model_dump(exclude={"extra_args"})
    text = ", ".join(f"{k}={v}" for k, v in fields.items() if v not in (None, [], ""))
    return redact_text(text)  # an image override may name a registry with user:password@


def _auth(app: str) -> str | None:
    """The serving app's auth, or what to set when it has none (None for the train app)."""
    cfg = APPS[app][1].from_env()
    if not isinstance(cfg, ServingConfig):
        return None
    if cfg.auth != "none":
        return cfg.auth + (" (WARNING: anyone with the URL can call it)" if cfg.public else "")
    try:
        cfg.check_auth()
    except ModalConfigError as exc:
        return f"MISSING: {exc}"
    return cfg.auth


def deploy_command(
    args: argparse.Namespace, run: Callable[..., subprocess.CompletedProcess] | None = None
) -> int:
    """Deploy one app; exit 2 with what to set when credentials or settings are missing."""
    try:
        settings = _settings(args.app)
        cfg = APPS[args.app][1].from_env()
        if isinstance(cfg, ServingConfig):
            cfg.check_auth()  # no key, no proxy auth, not public on purpose: deploy nothing
        importlib.import_module(APPS[args.app][0])  # image/GPU errors surface here, offline
    except ModalConfigError as exc:
        print(f"lakeloom modal deploy: {exc}", file=sys.stderr)
        return 2
    argv = deploy_argv(args.app, args.env)
    print(f"{args.app}: {settings}")
    if args.dry_run:
        print(" ".join(argv))
        return 0
    if credentials_source() is None:
        print(f"lakeloom modal deploy: {ModalCredentialsError()}", file=sys.stderr)
        return 2
    return (run or subprocess.run)(argv, check=False).returncode


def status_command(args: argparse.Namespace) -> int:
    """Print settings per app, the credentials source, and (online) each deployment's URL."""
    source = credentials_source()
    missing = "MISSING: set MODAL_TOKEN_ID/MODAL_TOKEN_SECRET or run `modal token new`"
    print(f"credentials: {source or missing}")
    failed = False
    for app in APPS:
        try:
            print(f"{app}: {_settings(app)}")
            auth = _auth(app)
        except ModalConfigError as exc:
            print(f"{app}: {exc}")
            failed = True
            continue
        if auth is not None:
            print(f"  auth: {auth}")
        if args.offline or source is None:
            continue
        print(f"  deployment: {_probe(app, args.env)}")
    return 1 if failed else 0


def _probe(app: str, env: str | None) -> str:
    """Describe whether the app is deployed (one lookup per app)."""
    import modal
    import modal.exception

    name = APPS[app][1].from_env().app_name
    fn = modal.Function.from_name(name, PROBE_FUNCTION[app], environment_name=env)
    try:
        if PROBE_FUNCTION[app] == "serve":
            return f"deployed at {redact_url(fn.get_web_url() or '')}"
        fn.hydrate()
        return "deployed"
    except modal.exception.NotFoundError:
        return f"not deployed (lakeloom modal deploy {app})"
    except modal.exception.AuthError as exc:
        return f"credentials rejected: {redact_text(str(exc))}"

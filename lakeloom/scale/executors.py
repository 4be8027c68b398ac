"""Which Dagster executor runs the steps of a run, chosen by settings, not by code changes.

``LAKELOOM_EXECUTOR``:

* ``in_process``: every step in the run's own process (debugging, notebooks).
* ``multiprocess``: one child process per step, at most ``LAKELOOM_MAX_CONCURRENT`` at once
  (default: one per CPU). Dagster's ``multiprocess_executor``.
* ``celery``: steps go to Celery workers through the broker ``LAKELOOM_CELERY_BROKER``
  (``redis://host:6379/0``); results through ``LAKELOOM_CELERY_BACKEND`` (default: the broker).
  Start workers with :func:`celery_worker_command` or ``dagster-celery worker start``.
  Needs ``pip install 'lakeloom[scale]'``.
* ``k8s``: one Kubernetes Job per step (``dagster_k8s.k8s_job_executor``, configured by the Helm
  deployment's run launcher; see the README). Needs ``pip install 'lakeloom[k8s]'``.
* unset: Dagster's default (multiprocess, or in-process where the run cannot be reconstructed).

Whatever the executor, assets that call an LLM run in that provider's Dagster pool, so the
instance's pool limit caps how many steps hit one provider at once across all runs and workers,
and the shared limiter (``LAKELOOM_LIMITER_URL=redis://...``) keeps their combined rate under
the provider's RPM/TPM.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

EXECUTOR_ENV = "LAKELOOM_EXECUTOR"
KINDS = ("in_process", "multiprocess", "celery", "k8s")


class ExecutorConfigError(ValueError):
    """The executor settings are incomplete or unknown."""


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor named by ``LAKELOOM_EXECUTOR`` (see the module docstring).

    Examples:
        >>> executor_from_env({"LAKELOOM_EXECUTOR": "multiprocess"}).name
        'multiprocess'
    """
    env = os.environ if env is None else env
    kind = (env.get(EXECUTOR_ENV) or "").strip().lower().replace("-", "_")
    if kind == "":
        return dg.multi_or_in_process_executor
    if kind == "in_process":
        return dg.in_process_executor
    if kind == "multiprocess":
        # spawn, not forkserver: a forkserver child could not send any S3 request through
        # obstore here ("error sending request"), while spawned step processes work
        config = {"max_concurrent": _int(env, "LAKELOOM_MAX_CONCURRENT", 0)}
        return dg.multiprocess_executor.configured(
            {**config, "start_method": {"spawn": {}}}, name="multiprocess"
        )
    if kind == "celery":
        return _celery(env)
    if kind == "k8s":
        try:
            from dagster_k8s import k8s_job_executor
        except ImportError as exc:
            raise ExecutorConfigError(
                f"{EXECUTOR_ENV}=k8s needs dagster-k8s: pip install 'lakeloom[k8s]'"
            ) from exc
        return k8s_job_executor
    raise ExecutorConfigError(f"{EXECUTOR_ENV}={kind!r}: expected one of {', '.join(KINDS)}")


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ExecutorConfigError(f"{name}={raw!r}: expected a whole number") from None
    if value < 0:
        raise ExecutorConfigError(f"{name}={raw!r}: must be >= 0 (0 = one per CPU)")
    return value


BROKER_ENV = "LAKELOOM_CELERY_BROKER"
BACKEND_ENV = "LAKELOOM_CELERY_BACKEND"


def celery_settings(env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """``(broker, backend)`` URLs from ``LAKELOOM_CELERY_BROKER`` / ``LAKELOOM_CELERY_BACKEND``."""
    env = os.environ if env is None else env
    broker = env.get(BROKER_ENV)
    if not broker:
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}=celery needs {BROKER_ENV} (e.g. redis://127.0.0.1:6379/0)"
        )
    return broker, env.get(BACKEND_ENV) or broker


def _source(env: Mapping[str, str], name: str, value: str) -> str | dict[str, str]:
    """``{"env": NAME}`` when this process's env holds the value, else the value itself.

    A broker URL may carry a password: named by its env var, it is resolved where the executor
    starts and never lands in Dagster's executor config, run records or snapshots.
    """
    return {"env": name} if os.environ.get(name) == value else value


def _celery(env: Mapping[str, str]) -> dg.ExecutorDefinition:
    try:
        from dagster_celery import celery_executor
    except ImportError as exc:
        raise ExecutorConfigError(
            f"{EXECUTOR_ENV}=celery needs dagster-celery: pip install 'lakeloom[scale]'"
        ) from exc
    broker, backend = celery_settings(env)
    backend_name = BACKEND_ENV if env.get(BACKEND_ENV) else BROKER_ENV
    config = {
        "broker": _source(env, BROKER_ENV, broker),
        "backend": _source(env, backend_name, backend),
    }
    return celery_executor.configured(config, name="celery")


_WORKER_CONFIG = f"""# written by lakeloom: URLs (and passwords) come from the worker's env
import os

broker_url = os.environ[{BROKER_ENV!r}]
result_backend = os.environ.get({BACKEND_ENV!r}) or broker_url
worker_prefetch_multiplier = 1
"""


def celery_worker_command(
    config_dir: Path,
    *,
    concurrency: int = 2,
    name: str = "lakeloom",
    env: Mapping[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """``(argv, env)`` that start a Celery worker for ``LAKELOOM_EXECUTOR=celery`` runs.

    Writes ``dagster_celery_config.py`` (broker and backend) into ``config_dir``, which goes on
    the worker's ``PYTHONPATH`` (what ``dagster-celery worker start -y`` does, without needing a
    Dagster instance); the file reads the URLs from the worker's env, so no password is
    written to disk. The ``celery`` program is the one beside this interpreter, and the venv's
    ``bin`` leads ``PATH`` (else the worker fails with ``FileNotFoundError: 'celery'``).
    """
    env = dict(os.environ if env is None else env)
    celery_settings(env)  # fail now, naming the setting, when the broker is missing
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "dagster_celery_config.py").write_text(_WORKER_CONFIG)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in [str(config_dir), env.get("PYTHONPATH", "")] if p
    )
    argv = [
        str(Path(bindir) / "celery"),
        "-A",
        "dagster_celery.app",
        "worker",
        "--prefetch-multiplier=1",
        "--loglevel=INFO",
        "--concurrency",
        str(concurrency),
        "-n",
        f"{name}@%h",
    ]
    return argv, env

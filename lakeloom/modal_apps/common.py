"""What the serving apps share: the weight cache, secrets, and launching the server process.

Nothing here talks to Modal at import time: ``modal.Volume.from_name``/``modal.Secret.from_name``
only build lazy handles that Modal resolves when the app is deployed or run.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

import modal

from lakeloom.modal_apps.config import ServingConfig

#: Where the weight cache volume is mounted in the serving containers.
CACHE_DIR = "/cache"
#: Hugging Face cache on the volume: weights are downloaded once, then read by every container.
HF_HOME = f"{CACHE_DIR}/huggingface"
#: The key a serving API-key secret must define.
API_KEY_VAR = "LAKELOOM_SERVING_API_KEY"


def cache_env() -> dict[str, str]:
    """Env vars pointing every Hugging Face/vLLM cache at the volume."""
    return {
        "HF_HOME": HF_HOME,
        "HF_HUB_CACHE": f"{HF_HOME}/hub",
        "HUGGINGFACE_HUB_CACHE": f"{HF_HOME}/hub",
        "VLLM_CACHE_ROOT": f"{CACHE_DIR}/vllm",
    }


def cache_volume(config: ServingConfig) -> modal.Volume:
    """Return the (lazily created) volume holding the model weights."""
    return modal.Volume.from_name(config.cache_volume, create_if_missing=True)


def secrets(names: Sequence[str]) -> list[modal.Secret]:
    """Lazy handles on named Modal Secrets (resolved at deploy time, never at import)."""
    return [modal.Secret.from_name(name) for name in names]


def function_env(config: ServingConfig) -> dict[str, str]:
    """Return the container env: the resolved config (so re-imports agree) plus cache paths."""
    return {**config.to_env(), **cache_env()}


def serving_function_options(config: ServingConfig) -> dict[str, Any]:
    """Return the ``app.function`` keyword arguments of a serving app: GPU, cache, autoscaling.

    A plain function so tests can check that every setting reaches Modal. Refuses (naming the
    settings) an app with neither an API key nor proxy auth unless it is ``public`` on purpose.
    """
    config.check_auth()
    return {
        "gpu": config.gpu,
        "volumes": {CACHE_DIR: cache_volume(config)},
        "secrets": secrets(config.secret_names),
        "env": function_env(config),
        "min_containers": config.min_containers,
        "max_containers": config.max_containers,
        "scaledown_window": config.scaledown_window,
        "timeout": config.timeout,
    }


def web_server_options(config: ServingConfig) -> dict[str, Any]:
    """Return the ``modal.web_server`` keyword arguments: port, startup wait, proxy auth."""
    return {
        "port": config.port,
        "startup_timeout": config.startup_timeout,
        "requires_proxy_auth": config.proxy_auth,
    }


class MissingServingKeyError(RuntimeError):
    """The app was deployed to require an API key, but its Secret does not hold one."""


def server_env(
    environ: Mapping[str, str], api_key_target: str, *, require_key: str | None = None
) -> dict[str, str]:
    """Return the server process's env: the container's, with the serving API key renamed.

    The key goes under the name the server reads (``API_KEY`` for TEI, ``VLLM_API_KEY`` for
    vLLM), so it never appears in the process's argv. ``require_key`` (the Secret's name):
    fail instead of starting an open server when the Secret lacks the key.
    """
    env = dict(environ)
    key = env.pop(API_KEY_VAR, None)
    if key:
        env[api_key_target] = key
    elif require_key:
        raise MissingServingKeyError(
            f"Modal Secret {require_key!r} holds no {API_KEY_VAR}: refusing to start the "
            "server without the API key it was deployed to require"
        )
    return env


def launch_server(
    command: Sequence[str],
    api_key_target: str,
    environ: Mapping[str, str] | None = None,
    *,
    require_key: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` in the background; Modal's ``web_server`` waits for its port."""
    env = server_env(
        os.environ if environ is None else environ, api_key_target, require_key=require_key
    )
    return subprocess.Popen(list(command), env=env)

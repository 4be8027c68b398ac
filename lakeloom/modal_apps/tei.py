"""Text-embeddings-inference (TEI) on a Modal GPU, serving OpenAI-compatible ``/v1/embeddings``.

Deploy with ``lakeloom modal deploy tei`` (or ``modal deploy -m lakeloom.modal_apps.tei``); the
URL of ``serve`` plus ``/v1`` is an OpenAI ``base_url`` for embeddings, the same API the local
MiniLM server exposes. Settings: ``LAKELOOM_MODAL_TEI_*`` (see ``config.TEIConfig``).
Weights land once in the ``cache_volume`` Hugging Face cache; later containers read them there.
"""

from __future__ import annotations

import modal

from lakeloom.modal_apps.common import (
    HF_HOME,
    launch_server,
    serving_function_options,
    web_server_options,
)
from lakeloom.modal_apps.config import TEIConfig

config = TEIConfig.from_env()


def build_command(cfg: TEIConfig) -> list[str]:
    """Return the ``text-embeddings-router`` command line for ``cfg`` (pure, tested locally)."""
    return [
        "text-embeddings-router",
        "--model-id",
        cfg.model,
        "--revision",
        cfg.revision,
        "--hostname",
        "0.0.0.0",
        "--port",
        str(cfg.port),
        "--huggingface-hub-cache",
        f"{HF_HOME}/hub",
        "--max-client-batch-size",
        str(cfg.max_client_batch_size),
        "--max-batch-tokens",
        str(cfg.max_batch_tokens),
        "--max-concurrent-requests",
        str(max(512, cfg.max_inputs * 4)),
        *cfg.extra_args,
    ]


def start(cfg: TEIConfig) -> None:
    """Launch TEI in the background; it serves /embed, /v1/embeddings and /health."""
    launch_server(build_command(cfg), api_key_target="API_KEY", require_key=cfg.api_key_secret)


# The TEI images ship no Python; Modal adds one to run this module, which needs pydantic.
image = (
    modal.Image.from_registry(config.image_ref(), add_python="3.11")
    .entrypoint([])
    .pip_install("pydantic==2.14.3")
    .add_local_python_source("lakeloom")
)

app = modal.App(config.app_name)


@app.function(image=image, **serving_function_options(config))
@modal.concurrent(max_inputs=config.max_inputs)
@modal.web_server(**web_server_options(config))
def serve() -> None:
    """Modal entry point: start the TEI server that Modal then exposes at this function's URL."""
    start(config)

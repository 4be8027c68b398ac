"""vLLM's OpenAI-compatible server on a Modal GPU (``/v1/chat/completions``, ``/v1/models``).

Deploy with ``lakeloom modal deploy vllm`` (or ``modal deploy -m lakeloom.modal_apps.vllm``);
the URL of ``serve`` plus ``/v1`` is an OpenAI ``base_url`` for generation, with JSON-schema
structured output (``response_format={"type": "json_schema", ...}``). Settings:
``LAKELOOM_MODAL_VLLM_*`` (see ``config.VLLMConfig``).
"""

from __future__ import annotations

import modal

from lakeloom.modal_apps.common import (
    launch_server,
    serving_function_options,
    web_server_options,
)
from lakeloom.modal_apps.config import VLLMConfig, gpu_count

config = VLLMConfig.from_env()


def build_command(cfg: VLLMConfig) -> list[str]:
    """Return the ``vllm serve`` command line for ``cfg`` (pure, tested locally)."""
    command = [
        "vllm",
        "serve",
        cfg.model,
        "--revision",
        cfg.revision,
        "--served-model-name",
        cfg.model_name,
        "--host",
        "0.0.0.0",
        "--port",
        str(cfg.port),
        "--tensor-parallel-size",
        str(gpu_count(cfg.gpu)),
        "--gpu-memory-utilization",
        str(cfg.gpu_memory_utilization),
        "--max-num-seqs",
        str(cfg.max_inputs),
        "--uvicorn-log-level",
        "warning",
    ]
    if cfg.max_model_len is not None:
        command += ["--max-model-len", str(cfg.max_model_len)]
    if cfg.enforce_eager:
        command.append("--enforce-eager")
    return [*command, *cfg.extra_args]


def start(cfg: VLLMConfig) -> None:
    """Launch vLLM in the background; it reads the API key from ``VLLM_API_KEY`` when set."""
    launch_server(build_command(cfg), api_key_target="VLLM_API_KEY", require_key=cfg.api_key_secret)


def build_image(cfg: VLLMConfig) -> modal.Image:
    """Return the server image: CUDA base + Python + pinned vLLM (its wheel brings torch).

    An ``image`` override is used as is: it must already hold Python and vLLM (for instance
    ``vllm/vllm-openai:<tag>``).
    """
    add_python = None if cfg.image else "3.12"
    image = modal.Image.from_registry(cfg.image_ref(), add_python=add_python).entrypoint([])
    if cfg.packages:
        image = image.uv_pip_install(*cfg.packages)
    return image.add_local_python_source("lakeloom")


image = build_image(config)

app = modal.App(config.app_name)


@app.function(image=image, **serving_function_options(config))
@modal.concurrent(max_inputs=config.max_inputs)
@modal.web_server(**web_server_options(config))
def serve() -> None:
    """Modal entry point: start the vLLM server that Modal exposes at this function's URL."""
    start(config)

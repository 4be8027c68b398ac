"""llama.cpp's OpenAI-compatible server for a local GGUF model, as a managed child process.

The process is ``python -m lakeloom.local.llama_entry``: llama-cpp-python's own server with
two JSON-grammar fixes (no raw control characters in strings, integer bounds).

``llama-cpp-python[server]`` serves ``/v1/chat/completions`` with grammar-constrained JSON when
asked for ``response_format={"type": "json_object", "schema": {...}}`` (it rejects the
``json_schema`` type). It handles one request at a time (a lock around the model), so extra
concurrent clients queue rather than add throughput; start more servers (``replicas``) for that.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from lakeloom.local.models import local_llm
from lakeloom.local.process import ManagedServer

LLM_PORT_ENV = "LAKELOOM_LLM_PORT"
DEFAULT_LLM_PORT = 8081


class LlamaServerConfig(BaseModel):
    """How to run one llama.cpp server.

    Examples:
        >>> cfg = LlamaServerConfig(port=8081)
        >>> cfg.base_url
        'http://127.0.0.1:8081/v1'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str | None = Field(
        default=None, description="A registered local model name (see LOCAL_LLMS); None = default."
    )
    gguf: Path | None = Field(default=None, description="Explicit GGUF path (overrides `model`).")
    alias: str | None = Field(
        default=None, description="Name clients send as `model`; defaults to the registered name."
    )
    host: str = Field(default="127.0.0.1", description="Bind address (loopback by default).")
    port: int = Field(default=DEFAULT_LLM_PORT, ge=1, le=65535)
    n_ctx: int = Field(default=2048, ge=256, description="Context window in tokens.")
    n_threads: int = Field(default=2, ge=1, description="CPU threads for generation.")
    n_batch: int = Field(default=512, ge=32, description="Prompt tokens evaluated per step.")
    startup_timeout_s: float = Field(default=120.0, gt=0)

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    @property
    def served_alias(self) -> str:
        """The model name the server answers to."""
        if self.alias:
            return self.alias
        if self.gguf is not None:
            return self.gguf.stem
        return local_llm(self.model).alias

    def command(self) -> list[str]:
        """Build the server command line (locates the model file; see `llama_entry`)."""
        spec = local_llm(self.model)
        gguf = self.gguf or spec.locate()
        cmd = [
            sys.executable, "-m", "lakeloom.local.llama_entry",
            "--model", str(gguf),
            "--model_alias", self.served_alias,
            "--host", self.host,
            "--port", str(self.port),
            "--n_ctx", str(self.n_ctx),
            "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads),
            "--n_batch", str(self.n_batch),
            # Logits for the last token only: faster prompt eval; we never ask for logprobs.
            "--logits_all", "False",
            # Non-streaming clients must never cancel each other's generations.
            "--interrupt_requests", "False",
            "--verbose", "False",
        ]  # fmt: skip
        if spec.chat_format and self.gguf is None:
            cmd += ["--chat_format", spec.chat_format]
        return cmd


def llama_server(config: LlamaServerConfig, log_path: Path | None = None) -> ManagedServer:
    """Make a not-yet-started `ManagedServer` for ``config``; use it as a context manager.

    Examples:
        >>> with llama_server(LlamaServerConfig(port=8081)) as server:  # doctest: +SKIP
        ...     client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="local")
    """
    return ManagedServer(
        command=config.command(),
        name=f"llama.cpp server ({config.served_alias})",
        host=config.host,
        port=config.port,
        health_path="/v1/models",
        log_path=log_path,
        startup_timeout_s=config.startup_timeout_s,
        port_env_var=LLM_PORT_ENV,
    )

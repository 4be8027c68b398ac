"""Where lakeloom keeps its data: one project folder and one storage root, set by env vars.

``LAKELOOM_HOME`` is the project's data folder (Dagster instance, DuckDB file, limiter state,
cache journals); ``LAKELOOM_STORAGE_ROOT`` is where Delta tables live (a local folder or an
``s3://bucket/prefix`` URI) and ``LAKELOOM_STORAGE_OPTIONS`` a JSON object of delta-rs storage
options (for S3: endpoint, region, keys). For ``s3://`` roots the standard variables fill the
rest (``AWS_ACCESS_KEY_ID``, ``LAKELOOM_S3_ENDPOINT``...; see :mod:`lakeloom.storage.env`), and
secret values never appear in ``repr``.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from lakeloom.storage.env import OPTIONS_ENV, env_options, masked, parse_options
from lakeloom.storage.redact import redact_url


def data_dir() -> Path:
    """The project's data folder, created on first use."""
    path = Path(os.environ.get("LAKELOOM_HOME", Path.cwd() / "data")).resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


class Storage(BaseModel):
    """A storage root for Delta tables plus the options delta-rs needs to reach it.

    Examples:
        >>> Storage(root="/tmp/lake").table_uri("assets", "reviews")
        '/tmp/lake/assets/reviews'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    root: str = Field(description="Local folder or object-store URI (s3://bucket/prefix).")
    storage_options: dict[str, str] = Field(
        default_factory=dict, description="delta-rs storage options (endpoint, region, keys)."
    )

    def __repr_args__(self) -> list[tuple[str | None, object]]:
        """Show option names and public values only: secrets stay out of logs and tracebacks."""
        return [("root", redact_url(self.root)), ("storage_options", masked(self.storage_options))]

    @property
    def is_local(self) -> bool:
        """True when the root is a folder on this machine."""
        return "://" not in self.root or self.root.startswith("file://")

    def table_uri(self, *parts: str) -> str:
        """The URI of a table below the root; local roots are created on demand."""
        uri = "/".join([self.root.rstrip("/"), *(p.strip("/") for p in parts)])
        if self.is_local:
            Path(uri.removeprefix("file://")).parent.mkdir(parents=True, exist_ok=True)
        return uri

    @classmethod
    def from_env(cls) -> Storage:
        """Storage from LAKELOOM_STORAGE_ROOT and LAKELOOM_STORAGE_OPTIONS, else the data folder."""
        root = os.environ.get("LAKELOOM_STORAGE_ROOT") or str(data_dir() / "delta")
        options = env_options(root, parse_options(os.environ.get(OPTIONS_ENV)))
        return cls(root=root, storage_options=options)

    @classmethod
    def resolve(
        cls, root: str | None = None, storage_options: dict[str, str] | None = None
    ) -> Storage:
        """Use the explicit root/options where given and the environment's for the rest."""
        if root is not None and storage_options is not None:
            return cls(root=root, storage_options=storage_options)
        env = cls.from_env()
        if root is None or root == env.root:
            options = env.storage_options
        else:  # another root than the environment's: its own standard variables (S3 or not)
            options = env_options(root, parse_options(os.environ.get(OPTIONS_ENV)))
        return cls(
            root=root if root is not None else env.root,
            storage_options=storage_options if storage_options is not None else options,
        )

"""AssetOptions: the Dagster side of an asset, one typed object shared by every factory.

A factory takes a spec (what to compute) and an ``AssetOptions`` (where the asset lives and how
Dagster runs and checks it). ``None`` (and ``"default"`` for retries) means "the factory's own
default", so one options object can be shared by many factories. The flat keywords of each
factory (``group_name=``, ``pool=``, ...) build the same object through :func:`resolve_options`.

Examples:
    >>> opts = AssetOptions(group_name="reviews", key_prefix="llm", min_ok_ratio=0.95)
    >>> opts.key_path("labels")
    ['llm', 'labels']
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, field_validator

from lakeloom.engine.batch.runner import BatchSettings
from lakeloom.engine.modes import Mode

DEFAULT_RETRY = dg.RetryPolicy(
    max_retries=2, delay=15, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)
"""Step retries of LLM columns, for transient errors only: a rerun is cheap, the response cache
answers everything already paid for. Deterministic errors (bad input or config, a prompt over the
context window, a missing or wrong key) fail the step at once (``DETERMINISTIC`` in
:mod:`lakeloom.assets.llm_step`)."""

_MODES = ("online", "batch", "auto")
LLM_ONLY = ("mode", "batch_min_requests", "batch_max_wait_s", "batch", "min_ok_ratio", "blocking")
"""Fields only the LLM column factories (embedding_asset, generated_asset) use."""


class AssetOptions(BaseModel):
    """Where an asset lives and how Dagster runs and checks it; the same type for every factory.

    Examples:
        >>> AssetOptions(pool="llm-openai", retry_policy=None).retry_policy is None
        True
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    key_prefix: tuple[str, ...] = Field(
        (), description="Asset key prefix: 'raw' or ('team', 'raw'); None = no prefix."
    )
    group_name: str | None = Field(None, description="Dagster asset group.")
    description: str | None = Field(None, description="Asset description; None = generated.")
    metadata: dict[str, Any] = Field(
        default_factory=dict, description="Extra definition metadata (merged under lakeloom's)."
    )
    io_manager_key: str = Field("io_manager", description="Resource key of the Delta IO manager.")
    partitions_def: dg.PartitionsDefinition | None = Field(
        None, description="Partitions; None = the source's (or none for unpartitioned assets)."
    )
    pool: str | None = Field(
        None, description="Dagster pool; None = 'llm-<resource_key>' for LLM columns, else none."
    )
    retry_policy: dg.RetryPolicy | Literal["default"] | None = Field(
        "default",
        description="Step retries: 'default' = the factory's (DEFAULT_RETRY for LLM columns, "
        "none for the others); None = never retry.",
    )
    backfill_policy: dg.BackfillPolicy | None = Field(
        None,
        description="None = the factory's: one run for any number of partitions for LLM columns "
        "and file sources, Dagster's default (a run per partition) for predictions.",
    )
    mode: Mode = Field(
        "online", description="LLM columns: 'online', 'batch' (Batch API) or 'auto' (see below)."
    )
    batch_min_requests: int = Field(
        1_000, ge=1, description="mode='auto': cache misses from which the Batch API is used."
    )
    batch_max_wait_s: float | None = Field(
        None, gt=0, description="Longest wait for a Batch API job (needed by mode='auto')."
    )
    batch: BatchSettings | None = Field(None, description="Batch API settings; None = defaults.")
    min_ok_ratio: float | None = Field(
        None,
        ge=0,
        le=1,
        description="LLM columns: the ok_ratio check's floor; None = 0.99 (embeddings) or 0.9.",
    )
    blocking: bool = Field(True, description="A failed ok_ratio check fails the step.")

    @field_validator("key_prefix", mode="before")
    @classmethod
    def _prefix_tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        return (value,) if isinstance(value, str) else tuple(value)

    @field_validator("mode", mode="before")
    @classmethod
    def _known_mode(cls, value: Any) -> Any:
        if value not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {value!r}")
        return value

    @field_validator("metadata", mode="before")
    @classmethod
    def _metadata_dict(cls, value: Any) -> Any:
        return {} if value is None else dict(value)

    def key_path(self, name: str) -> list[str]:
        """The asset key path of ``name`` under this prefix."""
        return [*self.key_prefix, name]

    def retries(self, default: dg.RetryPolicy | None) -> dg.RetryPolicy | None:
        """The retry policy, the factory's ``default`` where the options leave it at 'default'."""
        return default if self.retry_policy == "default" else self.retry_policy

    def refuse(self, fields: Iterable[str], factory: str) -> None:
        """Raise naming the fields set away from their default that ``factory`` does not use."""
        base = _DEFAULTS
        unused = [f for f in fields if getattr(self, f) != getattr(base, f)]
        if unused:
            raise ValueError(f"{factory} does not use option(s) {unused}: leave them unset")


_DEFAULTS = AssetOptions()


def resolve_options(options: AssetOptions | None, factory: str, **flat: Any) -> AssetOptions:
    """One ``AssetOptions`` from ``options`` and a factory's flat keywords (same defaults).

    A keyword left at its default changes nothing; one that is set fills that field, and
    setting a field both ways to different values is refused by name.
    """
    given = AssetOptions(**flat)
    if options is None:
        return given
    update = {n: getattr(given, n) for n in flat if getattr(given, n) != getattr(_DEFAULTS, n)}
    clash = [
        n
        for n, value in update.items()
        if getattr(options, n) != getattr(_DEFAULTS, n) and getattr(options, n) != value
    ]
    if clash:
        raise ValueError(f"{factory}: {clash} set both in options= and as keywords; pick one")
    return options.model_copy(update=update)


def flat_defaults() -> Mapping[str, Any]:
    """Each option's default as a flat keyword takes it (for the factories' signature test)."""
    return {name: getattr(_DEFAULTS, name) for name in AssetOptions.model_fields}

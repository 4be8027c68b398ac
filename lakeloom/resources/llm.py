"""``LLMResource``: one OpenAI-compatible provider, its limits, budget, cache and Dagster pool.

One resource per provider endpoint (OpenAI, Azure OpenAI, or any compatible ``base_url``: vLLM,
TGI, TEI, llama.cpp, the lakeloom simulator). It declares what the provider can do
(``structured_output``), how hard to push it (``rpm``/``tpm``/``max_concurrency``), what a run
may spend (``max_cost_usd``) and which Dagster concurrency pool the assets using it run in, and
builds the engine that the functional core sends requests through. The API key comes from an
``EnvVar`` (Dagster shows the variable's name, never its value) or from a named env var read at
run time; it never appears in logs, metadata, tables or the cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Literal

import dagster as dg
from pydantic import Field, PrivateAttr, SecretStr
from pydantic.fields import FieldInfo

from lakeloom.engine.provider import MissingAPIKeyError, ProviderConfig

_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}


def _provider_field(name: str, **override: Any) -> Any:
    """``ProviderConfig``'s field ``name`` (default, constraints, description) with ``override``."""
    return FieldInfo.merge_field_infos(ProviderConfig.model_fields[name], **override)


class PoolMismatchError(ValueError):
    """An asset runs in a different Dagster pool than its resource declares."""


class LLMResource(dg.ConfigurableResource):
    """An OpenAI-compatible provider for embedding and generated assets.

    Examples:
        >>> defs = dg.Definitions(  # doctest: +SKIP
        ...     assets=[review_labels],
        ...     resources={
        ...         "llm": LLMResource(kind="openai", api_key=dg.EnvVar("OPENAI_API_KEY"),
        ...                            rpm=5_000, tpm=2_000_000, pool="llm-llm"),
        ...         "embedder": LLMResource(kind="compatible", base_url="http://127.0.0.1:8081/v1",
        ...                                 structured_output="none", pool="llm-embedder"),
        ...     },
        ... )
    """

    # Fields shared with ProviderConfig take its default, constraints and description (one source;
    # a default or description given here is where the resource deliberately differs) and reach
    # it through PROVIDER_FIELDS, not a hand copy. The annotations stay: Dagster builds the
    # resource's config schema, and type checkers its signature, from them.
    kind: Literal["openai", "azure", "compatible"] = _provider_field("kind", default="compatible")
    base_url: str | None = _provider_field("base_url")
    api_key: str | None = _provider_field(
        "api_key",
        description="API key; pass dg.EnvVar('OPENAI_API_KEY') so only the variable's name is "
        "stored in run config.",
    )
    api_key_env: str | None = _provider_field(
        "api_key_env",
        description="Env var read at run time when api_key is unset (default OPENAI_API_KEY / "
        "AZURE_OPENAI_API_KEY; none for compatible servers).",
    )
    api_version: str | None = _provider_field("api_version")
    deployment: str | None = _provider_field("deployment")
    structured_output: Literal["json_schema", "json_object", "none"] = _provider_field(
        "structured_output"
    )
    rpm: int | None = _provider_field("rpm")
    tpm: int | None = _provider_field("tpm")
    max_concurrency: int = _provider_field("max_concurrency", default=32)
    timeout_s: float = _provider_field("timeout_s")
    max_attempts: int = _provider_field("max_attempts")
    unreachable_after: int = _provider_field("unreachable_after")
    cache_namespace: str | None = _provider_field("cache_namespace", default=None)
    price_model: str | None = _provider_field("price_model")
    limits: dict[str, dict[str, int | None]] | None = _provider_field("limits")

    # The resource's own settings: the Dagster pool and what the Engine gets besides the provider.
    pool: str | None = Field(
        default=None,
        description="Dagster concurrency pool of the assets using this provider (checked at run "
        "start; the factories default to 'llm-<resource key>').",
    )
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="Budget of one run; the engine stops before exceeding it."
    )
    cache: bool = Field(default=True, description="Reuse paid responses (cache keyed by request).")
    limiter_url: str | None = Field(
        default=None,
        description="Shared limiter state for all runs against this provider (redis://...); "
        "default LAKELOOM_LIMITER_URL, else a local file.",
    )
    prices: dict[str, dict[str, float]] | None = Field(
        default=None, description="Price overrides, USD per 1M tokens: {model: {input, output}}."
    )

    _checked: bool = PrivateAttr(default=False)

    def key_env_name(self) -> str | None:
        """Name the env var the key is read from when ``api_key`` is unset."""
        return self.api_key_env or _DEFAULT_KEY_ENV.get(self.kind)

    def provider_config(self) -> ProviderConfig:
        """Build the engine's provider config; a missing key raises, naming its env var."""
        key = self.api_key or (os.environ.get(self.key_env_name() or "") or None)
        if key is None and self.kind != "compatible":
            raise MissingAPIKeyError(
                f"LLMResource(kind={self.kind!r}) needs an API key: set the "
                f"{self.key_env_name()} environment variable (or api_key=dg.EnvVar(...)); "
                "nothing was sent"
            )
        shared = {name: getattr(self, name) for name in PROVIDER_FIELDS}
        return ProviderConfig(**{**shared, "api_key": SecretStr(key) if key else None})

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check the key before any step sends anything."""
        self.provider_config()

    def check_pool(self, asset_pool: str, *, asset: str) -> None:
        """Refuse to run when the asset's pool is not this provider's declared pool."""
        if self.pool is not None and self.pool != asset_pool:
            raise PoolMismatchError(
                f"asset {asset} runs in Dagster pool {asset_pool!r} but its LLMResource declares "
                f"pool {self.pool!r}; pass pool={self.pool!r} to the asset factory so Dagster "
                "caps concurrency per provider"
            )

    def engine(self, progress: Callable[[str], Any] | None = None) -> Any:
        """Build the engine (limiter, cache, cost ledger, budget) the core sends requests with."""
        from lakeloom.engine.runner import Engine

        return Engine(
            self.provider_config(),
            cache=self.cache,
            max_cost_usd=self.max_cost_usd,
            prices=self.prices,
            progress=progress,
            limiter_url=self.limiter_url,
        )


# Every LLMResource field that ProviderConfig also declares; provider_config() passes each one on.
PROVIDER_FIELDS: tuple[str, ...] = tuple(
    name for name in LLMResource.model_fields if name in ProviderConfig.model_fields
)

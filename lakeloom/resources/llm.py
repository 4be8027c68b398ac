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

from lakeloom.engine.provider import MissingAPIKeyError, ProviderConfig

_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}


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

    kind: Literal["openai", "azure", "compatible"] = Field(
        default="compatible",
        description="openai (api.openai.com), azure (Azure OpenAI), or compatible (any base_url: "
        "vLLM, TGI, TEI, llama.cpp, the lakeloom simulator).",
    )
    base_url: str | None = Field(
        default=None, description="API base URL ending in /v1 (azure: the resource endpoint)."
    )
    api_key: str | None = Field(
        default=None,
        description="API key; pass dg.EnvVar('OPENAI_API_KEY') so only the variable's name is "
        "stored in run config.",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Env var read at run time when api_key is unset (default OPENAI_API_KEY / "
        "AZURE_OPENAI_API_KEY; none for compatible servers).",
    )
    api_version: str | None = Field(default=None, description="Azure API version.")
    deployment: str | None = Field(default=None, description="Azure deployment name.")
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How the server takes a JSON schema: json_schema (OpenAI, vLLM), json_object "
        "(llama.cpp: {'type':'json_object','schema':...}), none (schema in the prompt).",
    )
    rpm: int | None = Field(default=None, gt=0, description="Requests/minute limit (else learned).")
    tpm: int | None = Field(default=None, gt=0, description="Tokens/minute limit (else learned).")
    max_concurrency: int = Field(default=32, ge=1, le=4096, description="Requests in flight.")
    timeout_s: float = Field(default=60.0, gt=0, description="Per-attempt timeout, seconds.")
    max_attempts: int = Field(default=6, ge=1, le=50, description="Attempts per request.")
    unreachable_after: int = Field(
        default=20,
        ge=1,
        description="Consecutive connection failures after which the provider counts as down: "
        "the rest of the run is not sent ('provider unreachable: not sent').",
    )
    pool: str | None = Field(
        default=None,
        description="Dagster concurrency pool of the assets using this provider (checked at run "
        "start; the factories default to 'llm-<resource key>').",
    )
    max_cost_usd: float | None = Field(
        default=None, ge=0, description="Budget of one run; the engine stops before exceeding it."
    )
    cache: bool = Field(default=True, description="Reuse paid responses (cache keyed by request).")
    cache_namespace: str | None = Field(
        default=None,
        description="Mixed into every cache key. Default: this provider's identity (kind + "
        "normalized base URL), so another server never answers from this one's cache; give "
        "providers the same name to share a cache on purpose; '' reads caches written before "
        "namespaces (see `lakeloom cache migrate`).",
    )
    price_model: str | None = Field(
        default=None, description="Price-table model for every request (Azure deployments)."
    )
    limiter_url: str | None = Field(
        default=None,
        description="Shared limiter state for all runs against this provider (redis://...); "
        "default LAKELOOM_LIMITER_URL, else a local file.",
    )
    prices: dict[str, dict[str, float]] | None = Field(
        default=None, description="Price overrides, USD per 1M tokens: {model: {input, output}}."
    )
    limits: dict[str, dict[str, int]] | None = Field(
        default=None,
        description="Per-model overrides of the bundled provider limits ('*' = every model): "
        "context_window, max_output, max_inputs, max_input_tokens, max_request_tokens.",
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
        return ProviderConfig(
            kind=self.kind,
            base_url=self.base_url,
            api_key=SecretStr(key) if key else None,
            api_key_env=self.api_key_env,
            api_version=self.api_version,
            deployment=self.deployment,
            timeout_s=self.timeout_s,
            max_concurrency=self.max_concurrency,
            max_attempts=self.max_attempts,
            unreachable_after=self.unreachable_after,
            structured_output=self.structured_output,
            rpm=self.rpm,
            tpm=self.tpm,
            price_model=self.price_model,
            cache_namespace=self.cache_namespace,
            limits=self.limits,
        )

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

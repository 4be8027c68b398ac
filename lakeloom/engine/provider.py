"""Which provider the engine talks to: ``ProviderConfig`` (kind, URL, key, limits) as data."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lakeloom.engine.cache.namespace import provider_namespace
from lakeloom.storage.redact import redact_url, strip_url_secrets, url_identity

_DEFAULT_KEY_ENV = {"openai": "OPENAI_API_KEY", "azure": "AZURE_OPENAI_API_KEY"}


class MissingAPIKeyError(ValueError):
    """The provider needs an API key and none was configured."""


class ProviderConfig(BaseModel):
    """How to reach one OpenAI-compatible provider, and how hard to push it.

    Examples:
        >>> cfg = ProviderConfig(kind="compatible", base_url="http://127.0.0.1:8377/v1")
        >>> cfg.limiter_key
        'compatible:http://127.0.0.1:8377/v1'
    """

    # inputs stay out of validation errors: a bad base_url or api_key must not be echoed
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    kind: Literal["openai", "azure", "compatible"] = Field(
        "openai", description="openai (api.openai.com), azure, or any compatible server."
    )
    base_url: str | None = Field(
        None, description="API base URL (…/v1); for azure the resource endpoint."
    )
    api_key: SecretStr | None = Field(
        None, description="API key; never logged. Default: read from api_key_env."
    )
    api_key_env: str | None = Field(
        None, description="Env var holding the key (default OPENAI_API_KEY / AZURE_OPENAI_API_KEY)."
    )
    require_api_key: bool | None = Field(
        None,
        description="Fail before sending when no key is set (default: True unless compatible).",
    )
    api_version: str | None = Field(None, description="Azure API version, e.g. 2024-10-21.")
    deployment: str | None = Field(None, description="Azure deployment name (optional).")
    timeout_s: float = Field(60.0, gt=0, description="Per-attempt timeout in seconds.")
    max_concurrency: int = Field(64, ge=1, le=4096, description="Requests in flight at most.")
    max_attempts: int = Field(6, ge=1, le=50, description="Attempts per request, retries included.")
    unreachable_after: int = Field(
        20,
        ge=1,
        description="Consecutive connection failures (no HTTP answer at all, no success between "
        "them) after which the provider counts as unreachable: nothing more is sent this run.",
    )
    backoff_base_s: float = Field(0.5, ge=0, description="First retry's backoff ceiling.")
    backoff_max_s: float = Field(30.0, ge=0, description="Backoff ceiling (full jitter below it).")
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        "json_schema",
        description="How the server takes a JSON schema: OpenAI json_schema, llama.cpp "
        "json_object+schema, or none (prompt only).",
    )
    rpm: int | None = Field(None, gt=0, description="Requests/minute limit (else learned).")
    tpm: int | None = Field(None, gt=0, description="Tokens/minute limit (else learned).")
    provider_key: str | None = Field(
        None, description="Name of the shared limiter state (default: kind + base URL)."
    )
    price_model: str | None = Field(
        None, description="Price-table model for every request (Azure deployments, aliases)."
    )
    transport: Literal["auto", "aiohttp", "sdk"] = Field(
        "auto",
        description="auto: the SDK's own client for azure, the SDK's URL/headers on a shared "
        "aiohttp session otherwise (5-10x less CPU per request).",
    )
    cache_namespace: str = Field(
        "",
        description="Mixed into every cache key. Unset or None: the provider's identity (kind + "
        "normalized base URL, engine.cache_namespace), so two servers never answer for each "
        "other; a shared name shares the cache; '' reads caches written before namespaces.",
    )
    limits: dict[str, dict[str, int | None]] | None = Field(
        None,
        description="Per-model overrides of provider_limits.json ('*' = every model): "
        "context_window, max_output, max_inputs, max_input_tokens, max_request_tokens.",
    )

    @model_validator(mode="before")
    @classmethod
    def _default_cache_namespace(cls, data: Any) -> Any:
        """An unset ``cache_namespace`` becomes the provider's identity (never a secret)."""
        if isinstance(data, dict) and data.get("cache_namespace") is None:
            kind = data.get("kind") or "openai"
            data = {**data, "cache_namespace": provider_namespace(kind, data.get("base_url"))}
        return data

    @field_validator("base_url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        """Refuse credentials in the URL: HTTP clients log URLs (httpx at INFO) and errors."""
        if value and redact_url(value) != value:
            raise ValueError(
                f"base_url {redact_url(value)} carries credentials (user:password@ or a secret "
                "query parameter); pass the key as api_key or api_key_env instead"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> ProviderConfig:
        if self.kind == "azure" and not (self.base_url and self.api_version):
            raise ValueError(
                "azure provider needs base_url (the resource endpoint) and api_version"
            )
        if self.kind == "compatible" and not self.base_url:
            raise ValueError("compatible provider needs base_url (e.g. http://127.0.0.1:8377/v1)")
        return self

    @property
    def limiter_key(self) -> str:
        """Identifies the provider account whose limits the limiter shares.

        Persisted (limiter state, Redis keys, batch job tables) and shown in errors, so the base
        URL enters it without userinfo or secret query values (``storage.redact.url_identity``).
        """
        if self.provider_key:
            return strip_url_secrets(self.provider_key)
        return f"{self.kind}:{url_identity(self.base_url or 'https://api.openai.com/v1')}"

    def resolved_api_key(self) -> str | None:
        """Return the key from the config or its env var (None when unset)."""
        if self.api_key is not None and self.api_key.get_secret_value():
            return self.api_key.get_secret_value()
        env = self.api_key_env or _DEFAULT_KEY_ENV.get(self.kind)
        return (os.environ.get(env) or None) if env else None

    def check_api_key(self) -> str:
        """Return the key to send; raise :class:`MissingAPIKeyError` if required but missing."""
        key = self.resolved_api_key()
        required = (
            self.require_api_key
            if self.require_api_key is not None
            else (self.kind != "compatible")
        )
        if key is None and required:
            env = self.api_key_env or _DEFAULT_KEY_ENV.get(self.kind, "<api_key_env>")
            raise MissingAPIKeyError(
                f"no API key for the {self.kind} provider ({self.limiter_key}): set "
                f"ProviderConfig(api_key=...) or the {env} environment variable"
            )
        return key or "not-needed"

"""Provider settings and the retry loop around one request.

The SDK's own retries are off (``max_retries=0``): :meth:`Client.call` retries itself so that
every attempt passes through the rate limiter (``acquire`` before, ``record`` after, with the
``x-ratelimit-*`` headers and real usage), backs off exponentially with full jitter (at least
``Retry-After``), and ends a request that keeps failing as an explicit error result instead of
an exception that would lose the finished rows. How bytes travel is ``transport.py``'s job.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from lakeloom.engine.cache_namespace import provider_namespace
from lakeloom.engine.limiter import RateLimiter, UnlimitedLimiter
from lakeloom.engine.transport import Attempt, Transport, make_transport
from lakeloom.engine.types import LLMRequest, LLMResult
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


class Client:
    """Sends requests with retries (exponential backoff, full jitter), the limiter in the loop.

    Use as an async context manager; it owns the transport (one pooled HTTP connection set).

    Examples:
        >>> async def main(cfg, request):  # doctest: +SKIP
        ...     async with Client(cfg) as client:
        ...         return await client.call(request)
    """

    def __init__(self, config: ProviderConfig, limiter: RateLimiter | None = None) -> None:
        """Bind a provider config and a limiter (default: no limits)."""
        self.config = config
        self.limiter = limiter or UnlimitedLimiter()
        self._transport: Transport | None = None
        self._sums: dict[Any, tuple[int, int]] = {}
        self._ratios: dict[Any, float] = {}

    async def __aenter__(self) -> Client:
        """Open the transport (one pooled connection set for the whole run)."""
        self._transport = make_transport(self.config)
        await self._transport.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        """Close the pooled connections."""
        if self._transport is not None:
            await self._transport.close()
            self._transport = None

    def _reserve(self, request: LLMRequest) -> int:
        """Tokens to reserve: the prompt estimate scaled by what the provider has reported."""
        ratio = self._ratios.get(request.body.get("model"))
        prompt = request.prompt_tokens if ratio is None else round(request.prompt_tokens * ratio)
        return prompt + request.max_output_tokens

    def _learn(self, request: LLMRequest, reported_prompt: int) -> None:
        """Track reported/estimated prompt tokens per model (our tokenizer is an estimate)."""
        if request.prompt_tokens <= 0:
            return
        model = request.body.get("model")
        est, rep = self._sums.get(model, (0, 0))
        est, rep = est + request.prompt_tokens, rep + reported_prompt
        self._sums[model] = (est, rep)
        if est >= 200:  # enough evidence to trust the ratio
            self._ratios[model] = min(2.0, max(0.5, rep / est))

    def _backoff(self, failures: int, retry_after: float | None) -> float:
        cfg = self.config
        ceiling = min(cfg.backoff_max_s, cfg.backoff_base_s * (2 ** (failures - 1)))
        delay = random.uniform(0.0, ceiling)
        return max(delay, retry_after or 0.0)

    async def call(self, request: LLMRequest, body_text: str | None = None) -> LLMResult:
        """Send one request until it succeeds, fails for good, or runs out of attempts."""
        result = LLMResult(key=request.key, status="error", model=request.body.get("model"))
        started = time.perf_counter()
        limiter = self.limiter
        transport = self._transport
        assert transport is not None, "use 'async with Client(...)'"
        attempt: Attempt | None = None
        for number in range(1, self.config.max_attempts + 1):
            try:
                admission = await limiter.acquire(self._reserve(request))
            except Exception as exc:  # shared limiter state unreachable: stop, never overrun
                result.error = f"limiter unavailable: {exc}"
                result.fatal = True
                result.latency_s = time.perf_counter() - started
                return result
            attempt = await transport.send(request, body_text)
            used = None
            if attempt.body is not None:
                # Providers count prompt + max_tokens against TPM (not the completion): correct
                # the reservation by the real prompt size only.
                prompt = (attempt.body.get("usage") or {}).get("prompt_tokens")
                if prompt:
                    used = prompt + request.max_output_tokens
                    self._learn(request, prompt)
            limiter.record(
                admission,
                status_code=attempt.status_code,
                headers=attempt.headers,
                used_tokens=used,
            )
            result.attempts = number
            if attempt.body is not None:
                break
            if attempt.status_code == 429:
                result.rate_limited += 1
            if attempt.maybe_billed:
                result.uncertain_attempts += 1
            if not attempt.retryable or number == self.config.max_attempts:
                break
            result.retries += 1
            await asyncio.sleep(self._backoff(number, attempt.retry_after_s))
        assert attempt is not None
        result.latency_s = time.perf_counter() - started
        if attempt.body is not None:
            _fill_ok(result, request, attempt)
        else:
            tries = f" after {result.attempts} attempts" if result.attempts > 1 else ""
            result.error = f"{attempt.error}{tries}"
            result.fatal = attempt.fatal
        return result


def _fill_ok(result: LLMResult, request: LLMRequest, attempt: Attempt) -> None:
    body = attempt.body or {}
    usage = body.get("usage") or {}
    result.status = "ok"
    result.response = body
    result.response_text = attempt.text
    result.input_tokens = int(usage.get("prompt_tokens") or request.prompt_tokens)
    result.output_tokens = int(usage.get("completion_tokens") or 0)
    details = usage.get("prompt_tokens_details") or {}
    result.cached_input_tokens = int(details.get("cached_tokens") or 0)

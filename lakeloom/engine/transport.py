"""One HTTP exchange with the provider, classified: a parsed body or a reason to retry or stop.

Both transports start from the official SDK client (``AsyncOpenAI``/``AsyncAzureOpenAI``, SDK
retries off), which resolves the base URL, the auth and the default headers:

* ``SDKTransport`` sends through the SDK itself (``client.post(..., cast_to=httpx.Response)``,
  raw body, no pydantic parsing). Used for Azure, whose deployment routing and auth live there.
* ``AiohttpTransport`` posts the canonical body bytes on one shared ``aiohttp`` session with the
  SDK's URL and headers. The SDK's httpx path costs ~1-2 ms of CPU per request here (measured:
  ~440 req/s through ``AsyncOpenAI.post`` even on the aiohttp backend, ~200 req/s on default
  httpx, against ~5,700 req/s on plain aiohttp), too slow for thousands of requests a second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import openai

from lakeloom.engine.types import LLMRequest

if TYPE_CHECKING:
    from lakeloom.engine.provider import ProviderConfig

PATHS = {"chat.completions": "chat/completions", "embeddings": "embeddings"}
FATAL_STATUS = frozenset({401, 403})


@dataclass(slots=True)
class Attempt:
    """One HTTP exchange: either a parsed body or a classified failure."""

    status_code: int | None
    headers: Mapping[str, str]
    body: dict[str, Any] | None = None
    text: str | None = None
    error: str | None = None
    retry_after_s: float | None = None
    retryable: bool = False
    fatal: bool = False
    maybe_billed: bool = False


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` / ``retry-after`` (capped at 10 minutes)."""
    for name in ("retry-after-ms", "retry-after"):
        value = headers.get(name)
        if value:
            try:
                seconds = float(value) / (1000.0 if name.endswith("ms") else 1.0)
            except ValueError:
                continue
            return max(0.0, min(seconds, 600.0))
    return None


def _shape_problem(endpoint: str, body: Any) -> str | None:
    if not isinstance(body, dict):
        return "response is not a JSON object"
    if endpoint == "embeddings":
        data = body.get("data")
        return None if isinstance(data, list) and data else "response has no 'data'"
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return "response has no 'choices'"
    if not isinstance(choices[0].get("message"), dict):
        return "response choice has no 'message'"
    return None


def _error_message(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300] or "no body"
    inner = body.get("error", body) if isinstance(body, dict) else body
    if isinstance(inner, dict) and inner.get("message"):
        return str(inner["message"])[:300]
    return text[:300]


def classify(endpoint: str, status: int, headers: Mapping[str, str], text: str) -> Attempt:
    """Turn a status, headers and body text into an :class:`Attempt`."""
    if status >= 400:
        return Attempt(
            status,
            headers,
            error=f"HTTP {status}: {_error_message(text)}",
            retry_after_s=retry_after(headers),
            retryable=status in (408, 409, 429) or status >= 500,
            fatal=status in FATAL_STATUS,
        )
    try:
        body = json.loads(text)
    except ValueError:
        return Attempt(
            status,
            headers,
            error=f"malformed JSON body ({len(text)} bytes)",
            retryable=True,
            maybe_billed=True,
        )
    problem = _shape_problem(endpoint, body)
    if problem:
        return Attempt(status, headers, error=problem, retryable=True, maybe_billed=True)
    return Attempt(status, headers, body=body, text=text)


def sdk_client(config: ProviderConfig, http_client: httpx.AsyncClient | None = None) -> Any:
    """Build the official SDK client for ``config`` (SDK retries off: the engine retries)."""
    common: dict[str, Any] = {
        "api_key": config.check_api_key(),
        "max_retries": 0,
        "timeout": config.timeout_s,
    }
    if http_client is not None:
        common["http_client"] = http_client
    if config.kind == "azure":
        return openai.AsyncAzureOpenAI(
            azure_endpoint=config.base_url or "",
            api_version=config.api_version,
            azure_deployment=config.deployment,
            **common,
        )
    return openai.AsyncOpenAI(base_url=config.base_url, **common)


class Transport:
    """Sends one request; never raises for provider or network failures."""

    def __init__(self, config: ProviderConfig) -> None:
        """Bind the provider config."""
        self.config = config

    async def open(self) -> None:
        """Open pooled connections."""

    async def close(self) -> None:
        """Close them."""

    async def send(self, request: LLMRequest, body_text: str | None) -> Attempt:
        """One exchange."""
        raise NotImplementedError


class SDKTransport(Transport):
    """Through ``AsyncOpenAI.post``/``AsyncAzureOpenAI.post`` with raw responses."""

    _sdk: Any = None

    async def open(self) -> None:
        """Create the SDK client with a pooled httpx client."""
        n = max(100, self.config.max_concurrency * 2)
        http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=n, max_keepalive_connections=n),
            timeout=httpx.Timeout(self.config.timeout_s, connect=min(self.config.timeout_s, 10)),
        )
        self._sdk = sdk_client(self.config, http)

    async def close(self) -> None:
        """Close the SDK client."""
        if self._sdk is not None:
            await self._sdk.close()

    async def send(self, request: LLMRequest, body_text: str | None) -> Attempt:
        """POST via the SDK; SDK status errors are mapped back to status + headers + body."""
        path = "/" + PATHS[request.endpoint]
        try:
            response = await self._sdk.post(path, cast_to=httpx.Response, body=request.body)
        except openai.APIStatusError as exc:
            return classify(
                request.endpoint, exc.status_code, exc.response.headers, exc.response.text
            )
        except openai.APITimeoutError:
            return Attempt(None, {}, error="timeout", retryable=True, maybe_billed=True)
        except openai.APIConnectionError as exc:
            return Attempt(
                None, {}, error=f"connection error: {exc.__cause__ or exc}", retryable=True
            )
        return classify(request.endpoint, response.status_code, response.headers, response.text)


class AiohttpTransport(Transport):
    """Canonical body bytes on one ``aiohttp`` session, with the SDK's URL and headers."""

    _session: aiohttp.ClientSession | None = None
    _urls: dict[str, str]

    async def open(self) -> None:
        """Resolve URL and headers through the SDK, then open one pooled session."""
        sdk = sdk_client(self.config)
        base = str(sdk.base_url).rstrip("/") + "/"
        self._urls = {endpoint: base + path for endpoint, path in PATHS.items()}
        headers = {
            k: v
            for k, v in {**sdk.default_headers, **sdk.auth_headers}.items()
            if isinstance(v, str)
        }
        headers["Content-Type"] = "application/json"
        await sdk.close()
        cfg = self.config
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(
                limit=max(100, cfg.max_concurrency * 2), ttl_dns_cache=300
            ),
            timeout=aiohttp.ClientTimeout(total=cfg.timeout_s, connect=min(cfg.timeout_s, 10)),
            raise_for_status=False,
        )

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: LLMRequest, body_text: str | None) -> Attempt:
        """POST the exact bytes that were hashed."""
        assert self._session is not None
        data = (body_text if body_text is not None else json.dumps(request.body)).encode()
        try:
            async with self._session.post(self._urls[request.endpoint], data=data) as response:
                text = (await response.read()).decode("utf-8", "replace")
                return classify(request.endpoint, response.status, response.headers, text)
        except TimeoutError:
            return Attempt(None, {}, error="timeout", retryable=True, maybe_billed=True)
        except aiohttp.ClientError as exc:
            return Attempt(None, {}, error=f"connection error: {exc}", retryable=True)


def make_transport(config: ProviderConfig) -> Transport:
    """Pick the transport: ``sdk`` for Azure (or when asked), ``aiohttp`` otherwise."""
    if config.transport == "sdk" or (config.transport == "auto" and config.kind == "azure"):
        return SDKTransport(config)
    return AiohttpTransport(config)

"""The provider simulator's HTTP server (aiohttp): OpenAI-shaped endpoints, limits, faults, stats.

The request path is kept lean on purpose (the engine benchmark pushes thousands of requests per
second through it): one ``json.loads``, a cheap token estimate, two bucket updates, one
``json.dumps``, no per-request logging.

Extension point: ``build_app(config, extensions=...)`` calls each extension with the app and the
``Simulator``; ``EXTENSIONS`` lists the dotted paths loaded by default (the Files + Batches API
adds ``"lakeloom.sim.batches:register"`` here and reuses ``Simulator.chat_body`` /
``Simulator.embeddings_body`` for each line, outside the online rate limits).
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import socket
from collections.abc import Callable, Iterable
from typing import Any

from aiohttp import web

from lakeloom.sim import payloads
from lakeloom.sim.config import SimConfig
from lakeloom.sim.faults import Fault, FaultInjector
from lakeloom.sim.limits import ProviderLimits
from lakeloom.sim.stats import SimStats, body_key

Extension = Callable[[web.Application, "Simulator"], None]
EXTENSIONS: list[str] = ["lakeloom.sim.batches:register"]
API_KEY_ENV = "LAKELOOM_SIM_API_KEY"
_JSON = "application/json"


class _TooLarge(web.HTTPClientError):
    """413 with a JSON body (aiohttp's ``HTTPRequestEntityTooLarge`` forces a text one)."""

    status_code = 413


def error_body(message: str, kind: str, code: str | None = None, param: str | None = None) -> bytes:
    """Encode an OpenAI-shaped error body."""
    return json.dumps(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}
    ).encode()


class Simulator:
    """State of one simulated provider: config, limits, fault RNG and counters."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.limits = ProviderLimits(config.rpm, config.tpm, config.burst_s, config.count_rejected)
        self.faults = FaultInjector(config)
        self.stats = SimStats()
        key = config.api_key or os.environ.get(API_KEY_ENV) or None
        self._auth = f"Bearer {key}" if key else None
        self._no_latency = self.faults.latency.is_zero

    # -- bodies (no HTTP): reusable by extensions such as the Batch API -----------------------
    def chat_body(self, body: dict[str, Any], raw: bytes, *, malformed: bool = False) -> dict:
        """Build a ``chat.completion`` for ``body`` (raises ``payloads.BadRequest``)."""
        prompt, max_out = payloads.check_chat(body, self.config.default_max_tokens)
        return payloads.chat_completion(
            body, raw, seed=self.config.seed, prompt_tokens=prompt, max_out=max_out,
            malformed=malformed,
        )  # fmt: skip

    def embeddings_body(self, body: dict[str, Any]) -> dict:
        """Build an embeddings ``list`` for ``body`` (raises ``payloads.BadRequest``)."""
        return payloads.embeddings(body, dim=self.config.embedding_dim, seed=self.config.seed)

    # -- HTTP -----------------------------------------------------------------------------------
    def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> web.Response:
        return web.Response(status=status, body=body, headers=headers, content_type=_JSON)

    async def _parse(self, request: web.Request, endpoint: str) -> tuple[dict, bytes]:
        counts = self.stats.counts
        counts["received"] += 1
        self.stats.endpoints[endpoint] += 1
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            counts["unauthorized"] += 1
            raise web.HTTPUnauthorized(
                body=error_body(
                    "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                ),
                content_type=_JSON,
            )
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as exc:  # aiohttp's own reply is plain text
            counts["bad_requests"] += 1
            raise _TooLarge(
                body=error_body(exc.text or "Request too large.", "invalid_request_error"),
                content_type=_JSON,
            ) from None
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            counts["bad_requests"] += 1
            raise self._bad(payloads.BadRequest("request body must be a JSON object"))
        return body, raw

    def _bad(self, exc: payloads.BadRequest) -> web.HTTPBadRequest:
        self.stats.counts["bad_requests"] += 1
        return web.HTTPBadRequest(
            body=error_body(str(exc), "invalid_request_error", exc.code, exc.param),
            content_type=_JSON,
        )

    async def _gate(self, cost: int) -> tuple[Fault, dict[str, str]]:
        """Rate limits, then injected faults and latency; raises the HTTP error to send."""
        counts = self.stats.counts
        headers: dict[str, str] = {}
        limits = self.limits
        if limits.enabled:
            verdict = limits.admit(cost)
            headers = limits.headers()
            if not verdict.admitted:
                counts["rejected_429_limit"] += 1
                if verdict.too_large:
                    msg = f"Request too large: Limit {int(limits.tokens.limit)}, Requested {cost}."  # type: ignore[union-attr]
                else:
                    msg = f"Rate limit reached for {verdict.kind} per min (RPM/TPM)."
                    _retry_headers(headers, verdict.retry_after_s)
                raise web.HTTPTooManyRequests(
                    body=error_body(msg, verdict.kind, "rate_limit_exceeded"),
                    headers=headers,
                    content_type=_JSON,
                )
        counts["admitted"] += 1
        self.stats.admitted(cost)
        fault = self.faults.draw()
        if not self._no_latency:
            await asyncio.sleep(self.faults.delay_s())
        if fault is Fault.NONE or fault is Fault.MALFORMED:
            return fault, headers
        if fault is Fault.RATE_LIMIT:
            counts["rejected_429_injected"] += 1
            _retry_headers(headers, self.config.retry_after_429_s)
            raise web.HTTPTooManyRequests(
                body=error_body(
                    "Rate limit reached (injected by the simulator).",
                    "requests",
                    "rate_limit_exceeded",
                ),
                headers=headers,
                content_type=_JSON,
            )
        if fault is Fault.SERVER_ERROR:
            counts["errors_5xx"] += 1
            status = self.faults.server_error_status()
            cls = web.HTTPInternalServerError if status == 500 else web.HTTPServiceUnavailable
            raise cls(
                body=error_body("The server had an error (injected).", "server_error"),
                headers=headers,
                content_type=_JSON,
            )
        counts["timeouts"] += 1
        await asyncio.sleep(self.config.hang_s)
        raise web.HTTPGatewayTimeout(
            body=error_body("Request timed out (injected).", "server_error"),
            headers=headers,
            content_type=_JSON,
        )

    async def handle_chat(self, request: web.Request) -> web.Response:
        """``POST /v1/chat/completions``."""
        body, raw = await self._parse(request, "chat.completions")
        try:
            prompt, max_out = payloads.check_chat(body, self.config.default_max_tokens)
        except payloads.BadRequest as exc:
            raise self._bad(exc) from None
        cost = prompt + max_out
        if cost > self.config.context_window:
            raise self._bad(
                payloads.BadRequest(
                    f"This model's maximum context length is {self.config.context_window} "
                    f"tokens; the request has {prompt} prompt + {max_out} max output tokens.",
                    param="messages",
                    code="context_length_exceeded",
                )
            )
        fault, headers = await self._gate(cost)
        malformed = fault is Fault.MALFORMED
        try:
            out = payloads.chat_completion(
                body, raw, seed=self.config.seed, prompt_tokens=prompt, max_out=max_out,
                malformed=malformed,
            )  # fmt: skip
        except payloads.BadRequest as exc:
            raise self._bad(exc) from None
        stats = self.stats
        stats.counts["served"] += 1
        stats.counts["malformed"] += malformed
        stats.prompt_tokens += prompt
        completion = out["usage"]["completion_tokens"]
        stats.completion_tokens += completion
        stats.bill("online", str(body.get("model")), body_key(body), prompt, completion)
        return self._reply(200, json.dumps(out).encode(), headers)

    async def handle_embeddings(self, request: web.Request) -> web.Response:
        """``POST /v1/embeddings`` (malformed faults do not apply to vectors)."""
        body, _ = await self._parse(request, "embeddings")
        try:
            prompt = payloads.embedding_prompt_tokens(body)
            payloads.embedding_dimensions(body, self.config.embedding_dim)
        except payloads.BadRequest as exc:
            raise self._bad(exc) from None
        _, headers = await self._gate(prompt)
        out = self.embeddings_body(body)
        self.stats.counts["served"] += 1
        self.stats.prompt_tokens += prompt
        self.stats.bill("online", str(body.get("model")), body_key(body), prompt, 0)
        return self._reply(200, json.dumps(out).encode(), headers)

    async def handle_models(self, request: web.Request) -> web.Response:
        """``GET /v1/models`` (behind the API key, like every ``/v1`` route)."""
        self.stats.endpoints["models"] += 1
        if self._auth is not None and request.headers.get("Authorization") != self._auth:
            self.stats.counts["unauthorized"] += 1
            raise web.HTTPUnauthorized(
                body=error_body(
                    "Incorrect API key provided.", "invalid_request_error", "invalid_api_key"
                ),
                content_type=_JSON,
            )
        created = int(self.stats.started_at)
        data = [
            {"id": m, "object": "model", "created": created, "owned_by": "lakeloom-sim"}
            for m in self.config.model_ids
        ]
        return self._reply(200, json.dumps({"object": "list", "data": data}).encode(), {})

    async def handle_stats(self, request: web.Request) -> web.Response:
        """``GET /stats``: counters, peaks and the limits in force."""
        snap = self.stats.snapshot()
        cfg = self.config
        snap["config"] = {
            "rpm": cfg.rpm, "tpm": cfg.tpm, "burst_s": cfg.burst_s,
            "request_capacity": cfg.request_capacity, "token_capacity": cfg.token_capacity,
            "count_rejected": cfg.count_rejected, "latency_ms": cfg.latency_ms, "seed": cfg.seed,
        }  # fmt: skip
        return self._reply(200, json.dumps(snap).encode(), {})

    async def handle_reset(self, request: web.Request) -> web.Response:
        """``POST /stats/reset`` (``?limits=1`` also refills the rate-limit buckets)."""
        self.stats.reset()
        if request.query.get("limits") in ("1", "true"):
            self.limits.reset()
        return self._reply(200, b'{"reset": true}', {})


SIM_KEY = web.AppKey("sim", Simulator)


def _retry_headers(headers: dict[str, str], seconds: float) -> None:
    headers["retry-after"] = str(max(1, int(-(-seconds // 1))))
    headers["retry-after-ms"] = str(max(1, round(seconds * 1000)))


async def _health(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _invalid_url(request: web.Request) -> web.Response:
    """Any other path or method: OpenAI's JSON 404, not aiohttp's plain-text one."""
    message = f"Invalid URL ({request.method} {request.path})"
    return web.Response(
        status=404, body=error_body(message, "invalid_request_error"), content_type=_JSON
    )


def _load(path: str) -> Extension:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr or "register")


def build_app(
    config: SimConfig, extensions: Iterable[Extension | str] | None = None
) -> web.Application:
    """Build the aiohttp application of one simulated provider."""
    sim = Simulator(config)
    app = web.Application(client_max_size=64 * 1024**2)
    app[SIM_KEY] = sim
    app.router.add_post("/v1/chat/completions", sim.handle_chat)
    app.router.add_post("/v1/embeddings", sim.handle_embeddings)
    app.router.add_get("/v1/models", sim.handle_models)
    app.router.add_get("/stats", sim.handle_stats)
    app.router.add_post("/stats/reset", sim.handle_reset)
    app.router.add_get("/health", _health)
    for ext in EXTENSIONS if extensions is None else extensions:
        (_load(ext) if isinstance(ext, str) else ext)(app, sim)
    app.router.add_route("*", "/{tail:.*}", _invalid_url)  # last: only what nothing else matched
    return app


async def start(
    config: SimConfig, extensions: Iterable[Extension | str] | None = None
) -> tuple[web.AppRunner, int]:
    """Start serving on ``config.host:config.port``; return the runner and the bound port."""
    app = build_app(config, extensions)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((config.host, config.port))
    site = web.SockSite(runner, sock, backlog=2048)
    await site.start()
    return runner, sock.getsockname()[1]


async def serve_forever(config: SimConfig, on_ready: Callable[[str], None] | None = None) -> None:
    """Run until cancelled; ``on_ready`` gets the base URL (``http://host:port/v1``)."""
    runner, port = await start(config)
    try:
        if on_ready is not None:
            host = f"[{config.host}]" if ":" in config.host else config.host
            on_ready(f"http://{host}:{port}/v1")
        while True:
            await asyncio.sleep(3600)
    finally:
        await runner.cleanup()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """Make a uvloop loop when installed (dagster's uvicorn brings it), else a default loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is optional
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()

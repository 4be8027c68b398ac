"""Post JSON messages to a webhook: bounded timeout and retries, secrets redacted, URL not logged.

The webhook URL is a secret of its own (Slack and Teams put the token in the path, others a
``user:password@`` or a ``?token=``), so logs name only its host and port. Every string of a
payload is passed through :func:`redact` first: values of environment variables whose names
look like credentials, every URL's userinfo and secret query values, ``sk-...`` keys and
``Bearer`` tokens never leave the process, whatever an error message happened to contain.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

from lakeloom.storage.redact import REDACTED, hostport, redact_logs, redact_text, redact_url

WEBHOOK_ENV = "LAKELOOM_WEBHOOK_URL"
UI_URL_ENV = "LAKELOOM_UI_URL"
DEFAULT_UI_URL = "http://127.0.0.1:3000"

_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(r"(?i)\b(api[_-]?key|token|secret|password)=([^&\s\"']+)")

log = logging.getLogger(__name__)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    """Hide credentials in ``text``: secret-looking env var values, API keys, bearer tokens."""
    env = os.environ if env is None else env
    known = [v for k, v in env.items() if len(v) >= 8 and _SECRET_NAME.search(k) and v in text]
    text = redact_text(text, known)
    return _SECRET_ASSIGNMENT.sub(lambda m: f"{m.group(1)}={REDACTED}", text)


def redact_payload(value: Any, env: Mapping[str, str] | None = None) -> Any:
    """Apply :func:`redact` to every string inside a JSON-ready structure."""
    if isinstance(value, str):
        return redact(value, env)
    if isinstance(value, Mapping):
        return {k: redact_payload(v, env) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_payload(v, env) for v in value]
    return value


class WebhookConfig(BaseModel):
    """Where and how run summaries are posted; ``url=None`` turns notifications off.

    Examples:
        >>> WebhookConfig.from_env({"LAKELOOM_WEBHOOK_URL": "http://127.0.0.1:9/hook"}).enabled
        True
        >>> WebhookConfig.from_env({}).enabled
        False
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    url: str | None = Field(default=None, description=f"Webhook URL (env {WEBHOOK_ENV}).")
    ui_base_url: str = Field(
        default=DEFAULT_UI_URL, description=f"Dagster UI base for run links (env {UI_URL_ENV})."
    )
    timeout_s: float = Field(default=5.0, gt=0, le=120, description="Per-attempt timeout.")
    max_attempts: int = Field(default=3, ge=1, le=10, description="Attempts per message.")
    backoff_s: float = Field(default=0.5, ge=0, le=30, description="First retry delay (doubles).")

    @property
    def enabled(self) -> bool:
        """True when a URL is set."""
        return bool(self.url)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> WebhookConfig:
        """Read LAKELOOM_WEBHOOK_URL and LAKELOOM_UI_URL (at sensor evaluation, not import)."""
        env = os.environ if env is None else env
        return cls(
            url=env.get(WEBHOOK_ENV) or None,
            ui_base_url=(env.get(UI_URL_ENV) or DEFAULT_UI_URL).rstrip("/"),
        )

    def __repr_args__(self) -> list[tuple[str | None, object]]:
        """The webhook URL is a credential: only its host and port show in repr and logs."""
        shown = dict(super().__repr_args__())
        shown["url"] = self.host if self.url else None
        shown["ui_base_url"] = redact_url(self.ui_base_url)
        return list(shown.items())

    def run_url(self, run_id: str) -> str:
        """Link to a run in the Dagster UI (its userinfo and secret query values masked)."""
        return f"{redact_url(self.ui_base_url).rstrip('/')}/runs/{run_id}"

    @property
    def host(self) -> str:
        """The webhook's host and port, the only part of its URL that is ever logged."""
        return hostport(self.url or "")


def post_json(
    config: WebhookConfig,
    payload: Mapping[str, Any],
    *,
    idempotency_key: str | None = None,
) -> bool:
    """POST ``payload`` (redacted) to the webhook; True once a 2xx answer came back.

    Connection errors, timeouts, 429 and 5xx are retried with exponential backoff; other 4xx
    answers are final. Never raises: a broken webhook must not break the run it reports on.
    """
    if not config.url:
        return False
    redact_logs("httpx")  # it logs every request's full URL (the webhook's token) at INFO
    body = redact_payload(dict(payload))
    headers = {"User-Agent": "lakeloom-notify"}
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    delay = config.backoff_s
    with httpx.Client(timeout=config.timeout_s, follow_redirects=False) as client:
        for attempt in range(1, config.max_attempts + 1):
            try:
                response = client.post(config.url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            else:
                if response.is_success:
                    return True
                problem = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    log.warning("webhook at %s refused the message: %s", config.host, problem)
                    return False
            if attempt < config.max_attempts:
                log.info("webhook at %s: %s (attempt %d), retrying", config.host, problem, attempt)
                time.sleep(delay)
                delay *= 2
    log.warning("webhook at %s: gave up after %d attempts", config.host, config.max_attempts)
    return False

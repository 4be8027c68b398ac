"""Find Modal credentials locally, before any remote call, and explain what to set when absent.

The Modal client resolves a token from ``MODAL_TOKEN_ID``/``MODAL_TOKEN_SECRET``, OAuth env vars,
or the active profile of ``~/.modal.toml`` (``MODAL_CONFIG_PATH``, ``MODAL_PROFILE``). Without
one, ``.remote()`` raises ``AuthError`` quickly, but a wrong or half-set configuration can make
the client retry for about a minute; checking the same sources here first lets a run fail in
milliseconds with a message that says exactly what to do.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path

MISSING_CREDENTIALS_HELP = (
    "Modal credentials are missing: set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET "
    "(e.g. from a Dagster EnvVar or your secrets manager), or run `modal token new` "
    "(writes ~/.modal.toml; MODAL_CONFIG_PATH/MODAL_PROFILE select another file/profile). "
    "Or run with ModalResource(mode='local') to execute in-process without Modal."
)


class ModalCredentialsError(RuntimeError):
    """No Modal credentials are configured; raised before any remote call is attempted."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(MISSING_CREDENTIALS_HELP + (f" ({detail})" if detail else ""))


def credentials_source(environ: Mapping[str, str] | None = None) -> str | None:
    """Say where Modal would take its token from, or ``None`` when it has none.

    Only names the source (never returns a secret). Inside a Modal container the platform
    injects the identity itself, so that counts as configured.
    """
    env = os.environ if environ is None else environ
    if env.get("MODAL_IS_REMOTE") == "1" or env.get("MODAL_TASK_ID"):
        return "inside a Modal container"
    oauth = env.get("MODAL_OAUTH_REFRESH_TOKEN") and env.get("MODAL_OAUTH_CLIENT_ID")
    if oauth and (env.get("MODAL_OAUTH_CLIENT_SECRET") or env.get("MODAL_OAUTH_JWT_KEY")):
        return "env MODAL_OAUTH_*"
    token_id, token_secret = env.get("MODAL_TOKEN_ID"), env.get("MODAL_TOKEN_SECRET")
    if token_id and token_secret:
        return "env MODAL_TOKEN_ID/MODAL_TOKEN_SECRET"
    path = Path(env.get("MODAL_CONFIG_PATH") or Path("~/.modal.toml").expanduser())
    profile_name, profile = _active_profile(path, env.get("MODAL_PROFILE"))
    if (token_id or profile.get("token_id")) and (token_secret or profile.get("token_secret")):
        return f"{path} profile {profile_name!r}"
    return None


def require_credentials(environ: Mapping[str, str] | None = None) -> str:
    """Return the credentials source, or raise ``ModalCredentialsError`` naming what to set."""
    source = credentials_source(environ)
    if source is None:
        raise ModalCredentialsError()
    return source


def _active_profile(path: Path, requested: str | None) -> tuple[str, dict[str, object]]:
    """Pick the profile Modal would use: MODAL_PROFILE, else the one marked active, else default."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return requested or "default", {}
    profiles = {k: v for k, v in data.items() if isinstance(v, dict)}
    name = requested or next((k for k, v in profiles.items() if v.get("active") is True), "default")
    return name, profiles.get(name, {})

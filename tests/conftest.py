"""Shared fixtures: each concern keeps its fixtures in tests/fixtures/<concern>.py."""

import pytest

pytest_plugins = [
    "tests.fixtures.storage",
    "tests.fixtures.sim",
    "tests.fixtures.redis",
    "tests.fixtures.llm",
    "tests.fixtures.engine",
    "tests.fixtures.delta_io",
    "tests.fixtures.s3",
    "tests.fixtures.modal",
    "tests.fixtures.predict",
    "tests.fixtures.webhook",
    "tests.fixtures.services",
    "tests.fixtures.local",
]


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path, monkeypatch):
    """Every test gets its own LAKELOOM_HOME and storage root, never the project's data folder."""
    home = tmp_path / "lakeloom_home"
    monkeypatch.setenv("LAKELOOM_HOME", str(home))
    monkeypatch.setenv("LAKELOOM_STORAGE_ROOT", str(home / "delta"))
    monkeypatch.delenv("LAKELOOM_STORAGE_OPTIONS", raising=False)
    monkeypatch.delenv("LAKELOOM_LIMITER_URL", raising=False)
    yield

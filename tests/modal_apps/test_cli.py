"""`lakeloom modal deploy|status`: clear errors without credentials, the right modal command."""

import subprocess
import sys

import pytest

from lakeloom.cli import main
from lakeloom.modal_apps import cli as modal_cli
from tests.fixtures.network import record_network


def test_deploy_without_credentials_exits_2_naming_what_to_set(
    no_modal_credentials, monkeypatch, capsys
):
    monkeypatch.setenv("LAKELOOM_MODAL_TEI_API_KEY_SECRET", "lakeloom-serving-key")
    network = record_network(monkeypatch)
    assert main(["modal", "deploy", "tei"]) == 2
    assert network == []  # refused before any network round trip: fast on any machine
    err = capsys.readouterr().err
    assert "MODAL_TOKEN_ID" in err and "MODAL_TOKEN_SECRET" in err and "modal token new" in err


def test_deploy_runs_modal_deploy_on_the_app_module(no_modal_credentials, monkeypatch, capsys):
    # Credentials present as far as the local check goes; `modal deploy` itself is recorded,
    # not run (it needs a real workspace).
    monkeypatch.setattr(modal_cli, "credentials_source", lambda: "test")
    monkeypatch.setenv("LAKELOOM_MODAL_VLLM_GPU", "A100-80GB")
    monkeypatch.setenv("LAKELOOM_MODAL_VLLM_PROXY_AUTH", "1")
    seen = []

    def recorder(argv, check):
        seen.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(modal_cli.subprocess, "run", recorder)
    assert main(["modal", "deploy", "vllm", "--env", "staging"]) == 0
    assert seen == [
        [
            sys.executable,
            "-m",
            "modal",
            "deploy",
            "-m",
            "lakeloom.modal_apps.vllm",
            "--env",
            "staging",
        ]
    ]
    assert "gpu=A100-80GB" in capsys.readouterr().out


def test_deploy_dry_run_and_bad_settings(no_modal_credentials, monkeypatch, capsys):
    assert main(["modal", "deploy", "train", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-m modal deploy -m lakeloom.modal_apps.train" in out
    assert "model_volume=lakeloom-models" in out
    monkeypatch.setenv("LAKELOOM_MODAL_TEI_MAX_CONTAINERS", "0")
    assert main(["modal", "deploy", "tei", "--dry-run"]) == 2
    assert "LAKELOOM_MODAL_TEI_MAX_CONTAINERS" in capsys.readouterr().err


def test_status_offline_lists_every_app(no_modal_credentials, capsys):
    assert main(["modal", "status"]) == 0  # no credentials: settings only, no lookup
    out = capsys.readouterr().out
    assert "credentials: MISSING" in out
    for line in ("tei: app_name=lakeloom-tei", "vllm: app_name=lakeloom-vllm", "train:"):
        assert line in out


def test_unknown_app_is_rejected(no_modal_credentials):
    with pytest.raises(SystemExit):
        main(["modal", "deploy", "tgi"])


def test_deploy_of_an_app_with_no_auth_exits_2_naming_the_settings(
    no_modal_credentials, monkeypatch, capsys
):
    """Issue 13.13: neither a key nor proxy auth nor public=1: nothing is deployed."""
    monkeypatch.setattr(modal_cli, "credentials_source", lambda: "test")
    ran = []
    monkeypatch.setattr(modal_cli.subprocess, "run", lambda argv, check: ran.append(argv))
    assert main(["modal", "deploy", "vllm"]) == 2
    err = capsys.readouterr().err
    assert "LAKELOOM_MODAL_VLLM_API_KEY_SECRET" in err and "LAKELOOM_MODAL_VLLM_PUBLIC=1" in err
    assert "LAKELOOM_MODAL_VLLM_PROXY_AUTH=1" in err and ran == []

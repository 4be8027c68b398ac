"""The TEI and vLLM Modal apps: build offline without credentials, honour their env config."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lakeloom.modal_apps import common
from lakeloom.modal_apps.config import (
    ModalConfigError,
    TEIConfig,
    TrainConfig,
    VLLMConfig,
    gpu_count,
)

REPO = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter with every socket call failing: any network use at import time or
# while building the app objects would raise instead of hiding behind a cache.
BUILD_OFFLINE = textwrap.dedent(
    """
    import json, socket, sys

    def _no_network(*args, **kwargs):
        raise AssertionError(f"network call during import/build: {args[:1]}")

    socket.socket.connect = _no_network
    socket.socket.connect_ex = _no_network
    socket.create_connection = _no_network
    socket.getaddrinfo = _no_network

    import lakeloom.modal_apps.tei as tei
    import lakeloom.modal_apps.vllm as vllm
    from modal._utils.async_utils import synchronizer
    out = {}
    for mod in (tei, vllm):
        spec = mod.serve._spec_
        webhook = synchronizer._translate_in(mod.serve)._webhook_config
        out[mod.__name__.rsplit(".", 1)[1]] = {
            "proxy_auth": webhook.requires_proxy_auth,
            "secrets": len(spec.secrets),
            "app": mod.app.name,
            "gpu": spec.gpus,
            "volumes": sorted(spec.volumes),
            "web": mod.serve._is_web_endpoint(),
            "image": mod.config.image_ref(),
            "options": {k: v for k, v in mod.serving_function_options(mod.config).items()
                        if k in ("min_containers", "max_containers", "scaledown_window")
                        or k == "timeout"},
            "max_inputs": mod.config.max_inputs,
            "command": mod.build_command(mod.config),
        }
    heavy = ("torch", "transformers", "sentence_transformers", "vllm", "lightgbm", "sklearn")
    out["heavy_imports"] = sorted(m for m in heavy if m in sys.modules)
    print(json.dumps(out))
    """
)


# The serving apps refuse to deploy with no auth (issue 13.13): builds name an API-key secret.
WITH_KEYS = {
    "LAKELOOM_MODAL_TEI_API_KEY_SECRET": "lakeloom-serving-key",
    "LAKELOOM_MODAL_VLLM_API_KEY_SECRET": "lakeloom-serving-key",
}


def _run_build(extra_env: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "LAKELOOM_MODAL_"))}
    env.update({"MODAL_CONFIG_PATH": "/nonexistent/modal.toml", **extra_env})
    return subprocess.run(
        [sys.executable, "-c", BUILD_OFFLINE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _build_in_subprocess(extra_env: dict[str, str], *, keys: bool = True) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MODAL_", "LAKELOOM_MODAL_"))}
    env.update({"MODAL_CONFIG_PATH": "/nonexistent/modal.toml"})
    env.update({**(WITH_KEYS if keys else {}), **extra_env})
    proc = subprocess.run(
        [sys.executable, "-c", BUILD_OFFLINE],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_apps_build_without_credentials_or_network_quickly():
    built = _build_in_subprocess({})
    # quick on any machine: no network (every socket call raises above) and no heavy library
    # imported to build the apps, instead of a bound on seconds
    assert built["heavy_imports"] == [], built["heavy_imports"]
    tei, vllm = built["tei"], built["vllm"]
    assert (tei["app"], vllm["app"]) == ("lakeloom-tei", "lakeloom-vllm")
    assert tei["web"] and vllm["web"]
    # the API-key Secret plus the one Modal makes of the function env
    assert tei["secrets"] == vllm["secrets"] == 2 and not tei["proxy_auth"]
    assert tei["gpu"] == vllm["gpu"] == "L4"
    assert tei["volumes"] == vllm["volumes"] == [common.CACHE_DIR]
    assert tei["image"] == "ghcr.io/huggingface/text-embeddings-inference:89-1.9"
    assert vllm["image"] == "nvidia/cuda:12.8.1-devel-ubuntu22.04"
    assert tei["options"] == {
        "min_containers": 0,
        "max_containers": 4,
        "scaledown_window": 300,
        "timeout": 600,
    }
    assert "sentence-transformers/all-MiniLM-L6-v2" in tei["command"]


def test_env_config_changes_gpu_model_and_autoscaling():
    built = _build_in_subprocess(
        {
            "LAKELOOM_MODAL_TEI_GPU": "A100-80GB",
            "LAKELOOM_MODAL_TEI_MODEL": "BAAI/bge-small-en-v1.5",
            "LAKELOOM_MODAL_TEI_REVISION": "5c38ec7c405ec4b44b94cc5a9bb96e735b38267a",
            "LAKELOOM_MODAL_TEI_MIN_CONTAINERS": "1",
            "LAKELOOM_MODAL_TEI_MAX_CONTAINERS": "10",
            "LAKELOOM_MODAL_TEI_SCALEDOWN_WINDOW": "60",
            "LAKELOOM_MODAL_TEI_MAX_INPUTS": "16",
            "LAKELOOM_MODAL_VLLM_GPU": "H100:2",
            "LAKELOOM_MODAL_VLLM_MODEL": "Qwen/Qwen2.5-7B-Instruct",
            "LAKELOOM_MODAL_VLLM_SERVED_MODEL_NAME": "qwen7b",
            "LAKELOOM_MODAL_VLLM_APP_NAME": "team-a-vllm",
            "LAKELOOM_MODAL_VLLM_EXTRA_ARGS": "--enable-prefix-caching --dtype bfloat16",
        }
    )
    tei, vllm = built["tei"], built["vllm"]
    assert tei["gpu"] == "A100-80GB"
    assert tei["image"].endswith(":1.9")  # Ampere 8.0 images have no arch prefix
    assert tei["options"]["min_containers"] == 1
    assert tei["options"]["max_containers"] == 10
    assert tei["options"]["scaledown_window"] == 60
    assert tei["max_inputs"] == 16
    cmd = tei["command"]
    assert cmd[cmd.index("--model-id") + 1] == "BAAI/bge-small-en-v1.5"
    assert cmd[cmd.index("--revision") + 1] == "5c38ec7c405ec4b44b94cc5a9bb96e735b38267a"
    assert vllm["app"] == "team-a-vllm"
    assert vllm["gpu"] == "H100:2"
    cmd = vllm["command"]
    assert cmd[2] == "Qwen/Qwen2.5-7B-Instruct"
    assert cmd[cmd.index("--served-model-name") + 1] == "qwen7b"
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2"
    assert cmd[-3:] == ["--enable-prefix-caching", "--dtype", "bfloat16"]


def test_config_round_trips_through_the_container_env():
    cfg = VLLMConfig.from_env(
        {
            "LAKELOOM_MODAL_VLLM_GPU": "A10G",
            "LAKELOOM_MODAL_VLLM_HF_SECRET": "hf",
            "LAKELOOM_MODAL_VLLM_MAX_MODEL_LEN": "",
            "LAKELOOM_MODAL_VLLM_ENFORCE_EAGER": "true",
            "LAKELOOM_MODAL_VLLM_EXTRA_ARGS": "--quantization 'awq marlin'",
        }
    )
    assert cfg.max_model_len is None and cfg.enforce_eager
    assert cfg.extra_args == ["--quantization", "awq marlin"]
    assert VLLMConfig.from_env(cfg.to_env()) == cfg
    assert TrainConfig.from_env(TrainConfig().to_env()) == TrainConfig()
    assert cfg.secret_names == ["hf"]
    # What the container sees: the resolved config plus the cache paths on the volume.
    env = common.function_env(cfg)
    assert env["LAKELOOM_MODAL_VLLM_GPU"] == "A10G"
    assert env["HF_HOME"].startswith(common.CACHE_DIR)


def test_bad_settings_name_the_env_var():
    with pytest.raises(ModalConfigError, match="LAKELOOM_MODAL_TEI_MAX_CONTAINERS"):
        TEIConfig.from_env({"LAKELOOM_MODAL_TEI_MAX_CONTAINERS": "many"})
    with pytest.raises(ModalConfigError, match="LAKELOOM_MODAL_TEI_SCALEDOWN_WINDOW"):
        TEIConfig.from_env({"LAKELOOM_MODAL_TEI_SCALEDOWN_WINDOW": "7200"})
    with pytest.raises(ModalConfigError, match="LAKELOOM_MODAL_VLLM_GPU"):
        VLLMConfig.from_env({"LAKELOOM_MODAL_VLLM_GPU": "H100:two"})
    with pytest.raises(ModalConfigError, match="LAKELOOM_MODAL_TEI_IMAGE"):
        TEIConfig.from_env({"LAKELOOM_MODAL_TEI_GPU": "V100"}).image_ref()
    custom = TEIConfig.from_env(
        {"LAKELOOM_MODAL_TEI_GPU": "V100", "LAKELOOM_MODAL_TEI_IMAGE": "x:1"}
    )
    assert custom.image_ref() == "x:1"
    assert gpu_count("H100:4") == 4 and gpu_count("T4") == 1


def test_server_launch_maps_the_api_key_without_argv(tmp_path):
    """The serve body launches the server with the key under the name the server reads."""
    out = tmp_path / "seen.json"
    probe = (
        "import json, os, sys; json.dump({'argv': sys.argv[1:], "
        "'key': os.environ.get('VLLM_API_KEY'), "
        "'raw': os.environ.get('LAKELOOM_SERVING_API_KEY')}, "
        f"open({str(out)!r}, 'w'))"
    )
    environ = {"PATH": os.environ["PATH"], common.API_KEY_VAR: "sk-test-123"}
    proc = common.launch_server(
        [sys.executable, "-c", probe, "--port", "8000"], "VLLM_API_KEY", environ
    )
    assert proc.wait(timeout=30) == 0
    seen = json.loads(out.read_text())
    assert seen == {"argv": ["--port", "8000"], "key": "sk-test-123", "raw": None}


# -- issue 13.13: serving apps are never public by accident -----------------------------------
def test_deploy_with_no_auth_fails_naming_the_settings():
    proc = _run_build({})
    assert proc.returncode != 0
    for name in (
        "LAKELOOM_MODAL_TEI_API_KEY_SECRET",
        "LAKELOOM_MODAL_TEI_PROXY_AUTH",
        "LAKELOOM_MODAL_TEI_PUBLIC",
    ):
        assert name in proc.stderr, proc.stderr[-2000:]
    with pytest.raises(ModalConfigError, match="LAKELOOM_MODAL_VLLM_PUBLIC=1"):
        common.serving_function_options(VLLMConfig())
    with pytest.raises(ModalConfigError, match="lakeloom-tei would serve a public URL"):
        TEIConfig().check_auth()


def test_proxy_auth_reaches_the_web_endpoint_and_public_warns():
    built = _build_in_subprocess(
        {"LAKELOOM_MODAL_TEI_PROXY_AUTH": "1", "LAKELOOM_MODAL_VLLM_PUBLIC": "1"}, keys=False
    )
    assert built["tei"]["proxy_auth"] is True and built["tei"]["secrets"] == 1  # env only
    assert built["vllm"]["proxy_auth"] is False
    proxy = TEIConfig.from_env({"LAKELOOM_MODAL_TEI_PROXY_AUTH": "1"})
    assert proxy.check_auth() == "proxy"
    assert common.web_server_options(proxy) == {
        "port": 8000,
        "startup_timeout": 900,
        "requires_proxy_auth": True,
    }
    public = VLLMConfig.from_env({"LAKELOOM_MODAL_VLLM_PUBLIC": "1"})
    with pytest.warns(UserWarning, match="lakeloom-vllm is deployed PUBLIC"):
        assert public.check_auth() == "public"
    keyed = VLLMConfig.from_env({"LAKELOOM_MODAL_VLLM_API_KEY_SECRET": "k"})
    assert keyed.check_auth() == "api_key" and keyed.secret_names == ["k"]
    assert VLLMConfig.from_env(public.to_env()) == public  # the container sees the same


def test_server_refuses_to_start_open_when_its_key_secret_is_empty(tmp_path):
    environ = {"PATH": os.environ["PATH"]}  # the Secret was attached but holds no key
    with pytest.raises(common.MissingServingKeyError, match="'lakeloom-serving-key'"):
        common.launch_server(
            [sys.executable, "-c", "pass"], "API_KEY", environ, require_key="lakeloom-serving-key"
        )


def test_status_shows_each_serving_apps_auth(no_modal_credentials, monkeypatch, capsys):
    from lakeloom.cli import main

    monkeypatch.setenv("LAKELOOM_MODAL_TEI_API_KEY_SECRET", "k")
    assert main(["modal", "status"]) == 0
    out = capsys.readouterr().out
    assert "auth: api_key" in out and "MISSING: lakeloom-vllm would serve a public URL" in out

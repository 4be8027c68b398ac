"""Typed configuration of the Modal apps, read from ``LAKELOOM_MODAL_<APP>_<FIELD>`` env vars.

The same config object is built twice: on the machine that runs ``modal deploy`` (where it sets
the GPU, autoscaling and image of each function) and again inside every container when Modal
re-imports the app module. ``to_env()`` bakes the resolved values into the function's
environment so both sides always agree, whatever the container's own environment holds.

Every field of ``TEIConfig`` is set by ``LAKELOOM_MODAL_TEI_<FIELD>``, ``VLLMConfig`` by
``LAKELOOM_MODAL_VLLM_<FIELD>`` and ``TrainConfig`` by ``LAKELOOM_MODAL_TRAIN_<FIELD>`` (e.g.
``LAKELOOM_MODAL_TEI_GPU=A10G``, ``LAKELOOM_MODAL_VLLM_MAX_CONTAINERS=8``). An empty value
means "unset" for optional fields; list fields are shell-split (``"--dtype float16"``).
"""

from __future__ import annotations

import os
import shlex
import types
import typing
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: Prefix shared by every Modal setting.
ENV_PREFIX = "LAKELOOM_MODAL_"

#: TEI image tag prefix per GPU architecture (https://huggingface.co/docs/text-embeddings-inference,
#: "Supported hardware"); A100 (Ampere 8.0) images carry no prefix.
TEI_TAG_PREFIX: dict[str, str] = {
    "T4": "turing-",
    "A10": "86-",
    "A10G": "86-",
    "L4": "89-",
    "L40S": "89-",
    "A100": "",
    "A100-40GB": "",
    "A100-80GB": "",
    "H100": "hopper-",
    "H100!": "hopper-",
    "H200": "hopper-",
    "B200": "100-",
}


class ModalConfigError(ValueError):
    """A Modal setting from the environment is invalid; the message names the env var."""


def gpu_family(gpu: str) -> str:
    """Return the GPU type of a Modal GPU spec without its count (``"A10G:2"`` → ``"A10G"``)."""
    return gpu.split(":", 1)[0].strip().upper()


def gpu_count(gpu: str) -> int:
    """How many GPUs a Modal GPU spec asks for (``"H100:2"`` → 2)."""
    _, _, count = gpu.partition(":")
    return int(count) if count else 1


class EnvConfig(BaseModel):
    """A frozen settings model whose fields come from env vars named ``<env_prefix><FIELD>``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    env_prefix: ClassVar[str] = ENV_PREFIX

    @classmethod
    def env_var(cls, field: str) -> str:
        """Return the env var that sets ``field``."""
        return f"{cls.env_prefix}{field.upper()}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Self:
        """Read the config from ``environ`` (default os.environ); unset fields keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name, field in cls.model_fields.items():
            raw = env.get(cls.env_var(name))
            if raw is not None:
                values[name] = _parse(raw, field.annotation)
        try:
            return cls(**values)
        except ValidationError as exc:
            problems = "; ".join(
                f"{cls.env_var(str(err['loc'][0]))}: {err['msg']}" if err["loc"] else err["msg"]
                for err in exc.errors()
            )
            raise ModalConfigError(f"invalid Modal setting(s): {problems}") from None

    def to_env(self) -> dict[str, str]:
        """Every field as the env var that reproduces it (the inverse of ``from_env``)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                text = ""
            elif isinstance(value, bool):
                text = "true" if value else "false"
            elif isinstance(value, list | tuple):
                text = shlex.join(str(v) for v in value)
            else:
                text = str(value)
            out[self.env_var(name)] = text
        return out


def _parse(raw: str, annotation: Any) -> Any:
    """Turn an env string into what the field expects: None for "", a list for list fields."""
    args = typing.get_args(annotation)
    optional = type(None) in args
    if raw.strip() == "" and optional:
        return None
    origin = typing.get_origin(annotation)
    is_union = origin in (typing.Union, types.UnionType)
    inner = [a for a in args if a is not type(None)] if is_union else []
    if origin in (list, tuple) or any(typing.get_origin(a) in (list, tuple) for a in inner):
        return shlex.split(raw)
    return raw


class ServingConfig(EnvConfig):
    """What every OpenAI-compatible serving app shares: model, GPU, cache and autoscaling."""

    app_name: str = Field(description="Modal app name the resource looks up.")
    gpu: str = Field(description="Modal GPU spec: T4, L4, A10G, L40S, A100-80GB, H100, H100:2.")
    model: str = Field(description="Hugging Face model id to serve.")
    revision: str = Field(
        default="main", description="Model revision; pin a commit sha for reproducible deploys."
    )
    port: int = Field(default=8000, ge=1024, le=65535, description="Port the server listens on.")
    min_containers: int = Field(
        default=0, ge=0, description="Containers kept warm even with no traffic (billed while up)."
    )
    max_containers: int = Field(default=4, ge=1, description="Upper bound of the autoscaler.")
    scaledown_window: int = Field(
        default=300, ge=2, le=3600, description="Seconds an idle container stays up before exit."
    )
    max_inputs: int = Field(
        default=32, ge=1, description="Concurrent requests per container (modal.concurrent)."
    )
    startup_timeout: int = Field(
        default=900, ge=10, description="Seconds to wait for the port (incl. weight download)."
    )
    timeout: int = Field(default=600, ge=10, description="Seconds one request may take.")
    cache_volume: str = Field(
        default="lakeloom-hf-cache", description="Modal Volume holding the Hugging Face cache."
    )
    hf_secret: str | None = Field(
        default=None, description="Modal Secret with HF_TOKEN, for gated or private models."
    )
    api_key_secret: str | None = Field(
        default=None,
        description="Modal Secret with LAKELOOM_SERVING_API_KEY; the server then requires it "
        "as the bearer token. One of api_key_secret, proxy_auth or public must be set.",
    )
    proxy_auth: bool = Field(
        default=False,
        description="Modal proxy auth on the URL (requires_proxy_auth): callers send a proxy "
        "auth token as Modal-Key/Modal-Secret headers.",
    )
    public: bool = Field(
        default=False,
        description="Serve with no auth at all, on purpose (anyone with the URL spends your "
        "GPU time); a warning says so at every deploy.",
    )
    image: str | None = Field(default=None, description="Container image override.")
    extra_args: list[str] = Field(default_factory=list, description="Extra server CLI flags.")

    @field_validator("gpu")
    @classmethod
    def _gpu_has_count(cls, value: str) -> str:
        if value.count(":") > 1 or (":" in value and not value.split(":")[1].isdigit()):
            raise ValueError(f"GPU spec {value!r} must look like TYPE or TYPE:COUNT")
        return value

    @property
    def secret_names(self) -> list[str]:
        """Names of the Modal Secrets attached to the server function."""
        return [s for s in (self.hf_secret, self.api_key_secret) if s]

    @property
    def auth(self) -> str:
        """How callers are authenticated: ``api_key``, ``proxy``, both, ``public`` or ``none``."""
        pairs = (("api_key", bool(self.api_key_secret)), ("proxy", self.proxy_auth))
        modes = [mode for mode, on in pairs if on]
        if modes:
            return "+".join(modes)
        return "public" if self.public else "none"

    def check_auth(self) -> str:
        """Refuse to deploy an app anyone could call, unless ``public`` says so (with a warning).

        Modal web endpoints are public by default: without a key or proxy auth, whoever finds
        the URL runs the GPU on your bill and reads what it serves.
        """
        mode = self.auth
        if mode == "none":
            raise ModalConfigError(
                f"{self.app_name} would serve a public URL with no auth: set "
                f"{self.env_var('api_key_secret')} (a Modal Secret holding "
                f"LAKELOOM_SERVING_API_KEY, sent as the bearer token), or "
                f"{self.env_var('proxy_auth')}=1 (Modal proxy auth), or "
                f"{self.env_var('public')}=1 to serve it publicly on purpose"
            )
        if mode == "public":
            warnings.warn(
                f"{self.app_name} is deployed PUBLIC ({self.env_var('public')}=1): anyone with "
                f"its URL can call it; set {self.env_var('api_key_secret')} or "
                f"{self.env_var('proxy_auth')}=1 to require auth",
                UserWarning,
                stacklevel=2,
            )
        return mode


class TEIConfig(ServingConfig):
    """Text-embeddings-inference server settings (env prefix ``LAKELOOM_MODAL_TEI_``).

    Examples:
        >>> TEIConfig.from_env({"LAKELOOM_MODAL_TEI_GPU": "A10G"}).image_ref()
        'ghcr.io/huggingface/text-embeddings-inference:86-1.9'
    """

    env_prefix: ClassVar[str] = ENV_PREFIX + "TEI_"

    app_name: str = "lakeloom-tei"
    gpu: str = "L4"
    # Same model as the embedded local default, so Modal and local vectors are interchangeable.
    model: str = "sentence-transformers/all-MiniLM-L6-v2"
    max_inputs: int = Field(default=64, ge=1, description="Concurrent requests per container.")
    tei_version: str = Field(default="1.9", description="TEI release of the ghcr.io image.")
    max_client_batch_size: int = Field(
        default=256, ge=1, description="Most texts per /v1/embeddings request."
    )
    max_batch_tokens: int = Field(
        default=16384, ge=256, description="Tokens TEI batches on the GPU at once."
    )

    def image_ref(self) -> str:
        """Return the TEI image built for this GPU's architecture (or the ``image`` override)."""
        if self.image:
            return self.image
        family = gpu_family(self.gpu)
        if family not in TEI_TAG_PREFIX:
            raise ModalConfigError(
                f"no TEI image is known for GPU {self.gpu!r} ({self.env_var('gpu')}); use one of "
                f"{sorted(TEI_TAG_PREFIX)} or set {self.env_var('image')}"
            )
        tag = f"{TEI_TAG_PREFIX[family]}{self.tei_version}"
        return f"ghcr.io/huggingface/text-embeddings-inference:{tag}"


class VLLMConfig(ServingConfig):
    """vLLM OpenAI-compatible server settings (env prefix ``LAKELOOM_MODAL_VLLM_``)."""

    env_prefix: ClassVar[str] = ENV_PREFIX + "VLLM_"

    app_name: str = "lakeloom-vllm"
    gpu: str = "L4"
    model: str = "Qwen/Qwen2.5-1.5B-Instruct"
    max_inputs: int = Field(default=64, ge=1, description="Concurrent requests per container.")
    vllm_version: str = Field(default="0.33.0", description="vLLM release pip-installed.")
    cuda_image: str = Field(
        default="nvidia/cuda:12.8.1-devel-ubuntu22.04",
        description="Base image (CUDA toolkit for vLLM's JIT kernels); Python is added by Modal.",
    )
    served_model_name: str | None = Field(
        default=None, description="Model name clients send (default: the model id)."
    )
    max_model_len: int | None = Field(default=8192, ge=256, description="Context length cap.")
    gpu_memory_utilization: float = Field(default=0.90, gt=0.1, le=0.98)
    enforce_eager: bool = Field(
        default=False, description="Skip CUDA graph capture: faster cold start, slower decoding."
    )

    def image_ref(self) -> str:
        """Return the base image: the ``image`` override (with vLLM inside) or ``cuda_image``."""
        return self.image or self.cuda_image

    @property
    def packages(self) -> list[str]:
        """Return what is pip-installed on ``cuda_image`` (nothing on an ``image`` override)."""
        return [] if self.image else [f"vllm=={self.vllm_version}"]

    @property
    def model_name(self) -> str:
        """The name clients put in ``model`` (``--served-model-name``)."""
        return self.served_model_name or self.model


class TrainConfig(EnvConfig):
    """Training/prediction app settings (env prefix ``LAKELOOM_MODAL_TRAIN_``).

    Tree ensembles train on CPU, so ``gpu`` is unset by default; models go to ``model_volume``
    and Delta inputs are read from S3-compatible storage (credentials from ``storage_secret``)
    or from ``data_volume`` mounted at ``data_mount``.
    """

    env_prefix: ClassVar[str] = ENV_PREFIX + "TRAIN_"

    app_name: str = "lakeloom-train"
    gpu: str | None = Field(default=None, description="Modal GPU spec, unset for CPU training.")
    cpu: float = Field(default=4.0, gt=0, description="CPU cores per container.")
    memory: int = Field(default=8192, ge=512, description="Memory per container, MiB.")
    timeout: int = Field(default=3600, ge=10, description="Seconds one fold/fit may take.")
    max_containers: int = Field(default=16, ge=1, description="Folds running at once.")
    retries: int = Field(default=1, ge=0, le=10, description="Retries of a failed fold.")
    model_volume: str = Field(default="lakeloom-models", description="Volume for the model store.")
    models_mount: str = Field(default="/models", description="Where model_volume is mounted.")
    data_volume: str | None = Field(
        default=None, description="Volume holding Delta tables (instead of S3-compatible storage)."
    )
    data_mount: str = Field(default="/data", description="Where data_volume is mounted.")
    storage_secret: str | None = Field(
        default=None,
        description="Modal Secret with the storage credentials the references name "
        "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...).",
    )

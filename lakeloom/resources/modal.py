"""ModalResource: one switch between running GPU and training work in-process or on Modal.

``mode="local"`` calls the plain functions of ``lakeloom.modal_apps.train`` in this process and
points OpenAI-compatible clients at the local servers (llama.cpp, MiniLM); ``mode="modal"``
looks the deployed apps up by name (``modal.Function.from_name``) and calls the very same
functions there, passing ``lakeloom.ref`` JSON, never frames. Credentials are checked locally
before the first remote call, so a run without them fails in milliseconds with what to set.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal

import dagster as dg
import modal
import modal.exception
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from lakeloom.core.cv import NestedCVResult
from lakeloom.core.predict_spec import PredictSpec
from lakeloom.modal_apps import train
from lakeloom.modal_apps.credentials import ModalCredentialsError, require_credentials
from lakeloom.modal_apps.refs import RefLike, ref_json, remap_root
from lakeloom.models.store import ModelRef
from lakeloom.resources.llm import LLMResource
from lakeloom.storage.settings import Storage

Mode = Literal["local", "modal"]
AppRole = Literal["tei", "vllm", "train"]


class ModalAppNotFoundError(LookupError):
    """A Modal app/function the resource needs is not deployed where it looks."""


class OpenAIEndpoint(BaseModel):
    """An OpenAI-compatible endpoint: what an ``LLMResource(kind="compatible")`` needs.

    Examples:
        >>> OpenAIEndpoint(base_url="http://127.0.0.1:8082/v1", model="all-MiniLM-L6-v2").model
        'all-MiniLM-L6-v2'
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str = Field(description="OpenAI base_url, ending in /v1.")
    model: str = Field(description="Model name the server answers to.")
    api_key_env: str | None = Field(
        default=None, description="Env var holding the bearer key, when the server wants one."
    )
    structured_output: Literal["json_schema", "json_object", "none"] = Field(
        default="json_schema",
        description="How the server takes a JSON schema (LLMResource.structured_output).",
    )


class ModalResource(dg.ConfigurableResource):
    """Runs lakeloom's GPU serving and model training locally or on Modal, chosen by ``mode``.

    Examples:
        >>> import dagster as dg
        >>> defs = dg.Definitions(
        ...     resources={"modal": ModalResource(mode=dg.EnvVar("LAKELOOM_MODAL_MODE"))},
        ... )  # doctest: +SKIP
        >>> ModalResource(mode="local").embeddings_endpoint().base_url
        'http://127.0.0.1:8082/v1'
    """

    mode: Mode = Field(default="local", description="local: in-process; modal: deployed apps.")
    environment: str | None = Field(
        default=None, description="Modal environment of the apps (None: the profile's default)."
    )
    tei_app: str = Field(default="lakeloom-tei", description="Deployed TEI app name.")
    vllm_app: str = Field(default="lakeloom-vllm", description="Deployed vLLM app name.")
    tei_url: str | None = Field(
        default=None,
        description="Web URL of the TEI app's serve function (`lakeloom modal status` prints it); "
        "set it to skip the lookup, e.g. when building resources at definitions time.",
    )
    vllm_url: str | None = Field(
        default=None, description="Web URL of the vLLM app's serve function (skips the lookup)."
    )
    train_app: str = Field(default="lakeloom-train", description="Deployed training app name.")
    embedding_model: str = Field(
        default="sentence-transformers/all-MiniLM-L6-v2",
        description="Model the embeddings endpoint serves (TEI model id, or the local alias).",
    )
    generation_model: str = Field(
        default="Qwen/Qwen2.5-1.5B-Instruct",
        description="Model name the vLLM app serves (its served_model_name).",
    )
    api_key_env: str | None = Field(
        default=None,
        description="Env var with the serving API key (the LAKELOOM_SERVING_API_KEY of the "
        "apps' api_key_secret); apps deployed with proxy_auth need Modal-Key/Modal-Secret "
        "headers instead, which this resource does not send.",
    )
    local_embeddings_url: str = Field(
        default="http://127.0.0.1:8082/v1", description="Local OpenAI-style embeddings server."
    )
    local_generation_url: str = Field(
        default="http://127.0.0.1:8081/v1", description="Local llama.cpp server."
    )
    local_generation_model: str = Field(
        default="smollm2-135m-instruct", description="Model alias of the local llama.cpp server."
    )
    models_root: str | None = Field(
        default=None,
        description="Model store root in local mode (default: the storage root). In modal mode "
        "models go to the training app's model volume.",
    )
    remote_storage_root: str | None = Field(
        default=None,
        description="How Modal containers see the storage root, when it differs from here "
        "(e.g. /data/delta for tables synced to a Volume); None: same URIs (S3).",
    )

    _urls: dict[str, str] = PrivateAttr(default_factory=dict)

    # -- Modal plumbing -------------------------------------------------------------------------
    @property
    def remote(self) -> bool:
        """True when work goes to Modal."""
        return self.mode == "modal"

    def app_name(self, role: AppRole) -> str:
        """Return the configured app name for ``role``."""
        return {"tei": self.tei_app, "vllm": self.vllm_app, "train": self.train_app}[role]

    def check_credentials(self) -> str | None:
        """Fail fast (no network) when modal mode has no credentials; return their source."""
        return require_credentials() if self.remote else None

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Check credentials when a run starts, before any step does work or spends money."""
        self.check_credentials()

    @contextlib.contextmanager
    def _modal_errors(self, app: str, name: str) -> Iterator[None]:
        """Turn Modal's auth/lookup errors into messages that say what to do."""
        try:
            yield
        except modal.exception.AuthError as exc:
            raise ModalCredentialsError(f"Modal rejected the credentials: {exc}") from exc
        except modal.exception.NotFoundError as exc:
            env = self.environment or "the default environment"
            raise ModalAppNotFoundError(
                f"{app}.{name} is not deployed in {env}: run `lakeloom modal deploy` for it ({exc})"
            ) from exc

    def function(self, role: AppRole, name: str) -> modal.Function:
        """Return a handle on a deployed function, after the local credentials check."""
        self.check_credentials()
        return modal.Function.from_name(
            self.app_name(role), name, environment_name=self.environment
        )

    def endpoint_url(self, role: Literal["tei", "vllm"]) -> str:
        """Return the web URL of a serving app's ``serve`` function (looked up once, cached)."""
        explicit = self.tei_url if role == "tei" else self.vllm_url
        if explicit:
            return explicit.rstrip("/")
        if role not in self._urls:
            app = self.app_name(role)
            fn = self.function(role, "serve")
            with self._modal_errors(app, "serve"):
                url = fn.get_web_url()
            if not url:
                raise ModalAppNotFoundError(f"{app}.serve has no web URL; is it a web server?")
            self._urls[role] = url.rstrip("/")
        return self._urls[role]

    # -- serving endpoints ----------------------------------------------------------------------
    def embeddings_endpoint(self) -> OpenAIEndpoint:
        """Return the embeddings endpoint: the local MiniLM server or the TEI app."""
        if not self.remote:
            return OpenAIEndpoint(
                base_url=self.local_embeddings_url,
                model=self.embedding_model,
                structured_output="none",
            )
        return OpenAIEndpoint(
            base_url=f"{self.endpoint_url('tei')}/v1",
            model=self.embedding_model,
            api_key_env=self.api_key_env,
            structured_output="none",
        )

    def generation_endpoint(self) -> OpenAIEndpoint:
        """Return the chat endpoint: the local llama.cpp server or the vLLM app."""
        if not self.remote:
            return OpenAIEndpoint(
                base_url=self.local_generation_url,
                model=self.local_generation_model,
                structured_output="json_object",  # llama.cpp: {"type": "json_object", "schema"}
            )
        return OpenAIEndpoint(
            base_url=f"{self.endpoint_url('vllm')}/v1",
            model=self.generation_model,
            api_key_env=self.api_key_env,
        )

    def llm_resource(
        self, role: Literal["embeddings", "generation"], **overrides: Any
    ) -> LLMResource:
        """Return an ``LLMResource`` on this resource's endpoint for ``role``.

        The asset keeps its resource key and only the endpoint changes, so one asset runs
        against local servers, Modal or (with a plain ``LLMResource(kind="openai")``) OpenAI.
        Pass the endpoint's ``model`` to the asset. In modal mode without ``tei_url``/
        ``vllm_url`` this looks the URL up, so call it at run time, not at definitions time.
        """
        endpoint = (
            self.embeddings_endpoint() if role == "embeddings" else self.generation_endpoint()
        )
        return LLMResource(
            kind="compatible",
            base_url=endpoint.base_url,
            api_key_env=endpoint.api_key_env,
            structured_output=endpoint.structured_output,
            **overrides,
        )

    # -- training -------------------------------------------------------------------------------
    def _ref(self, ref: RefLike) -> str:
        text = ref_json(ref)
        if self.remote and self.remote_storage_root:
            text = remap_root(text, Storage.from_env().root, self.remote_storage_root)
        return text

    def _models_root(self) -> str:
        return self.models_root or Storage.from_env().root

    def run_folds(
        self, ref: RefLike, spec: PredictSpec, folds: Sequence[int] | None = None
    ) -> list[train.FoldOutput]:
        """Run outer folds of nested CV on the referenced table.

        Locally the folds run in this process (joblib workers when ``spec.n_jobs`` != 1); on
        Modal ``run_fold.map`` gives each fold its own container. Either way each fold gets the
        reference JSON and opens the pinned Delta version itself.
        """
        folds = list(range(spec.outer_folds) if folds is None else folds)
        text, spec_json = self._ref(ref), spec.model_dump_json()
        if not self.remote:
            if spec.n_jobs == 1 or len(folds) < 2:
                return [train.fold_from_ref(text, spec_json, k) for k in folds]
            from joblib import Parallel, delayed

            workers = len(folds) if spec.n_jobs < 0 else min(spec.n_jobs, len(folds))
            run = delayed(train.fold_from_ref)
            return list(Parallel(n_jobs=workers)(run(text, spec_json, k) for k in folds))
        fn = self.function("train", "run_fold")
        with self._modal_errors(self.train_app, "run_fold"):
            return list(fn.map([text] * len(folds), [spec_json] * len(folds), folds))

    def nested_cv(self, ref: RefLike, spec: PredictSpec) -> NestedCVResult:
        """Nested CV of ``spec`` on the referenced table, same result as ``core.cv.evaluate``."""
        return train.assemble_folds(self.run_folds(ref, spec), spec)

    def fit(
        self,
        ref: RefLike,
        spec: PredictSpec,
        name: str,
        cv_metrics: Mapping[str, float] | None = None,
    ) -> ModelRef:
        """Train and store the final model; returns where it is (model volume on Modal)."""
        text, spec_json = self._ref(ref), spec.model_dump_json()
        metrics = dict(cv_metrics) if cv_metrics is not None else None
        if not self.remote:
            out = train.fit_from_ref(text, spec_json, name, self._models_root(), metrics)
        else:
            fn = self.function("train", "final_fit")
            with self._modal_errors(self.train_app, "final_fit"):
                out = fn.remote(text, spec_json, name, metrics)
        return ModelRef.model_validate_json(out)

    def batch_predict(
        self,
        model: ModelRef,
        ref: RefLike,
        output_uri: str,
        keep_columns: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """Score the referenced table with a stored model; writes Delta at ``output_uri``."""
        text, model_json = self._ref(ref), model.model_dump_json()
        keep = list(keep_columns) if keep_columns is not None else None
        if not self.remote:
            storage = Storage.from_env()
            return train.predict_from_ref(
                model_json,
                text,
                self._models_root(),
                output_uri,
                keep_columns=keep,
                storage_options=storage.storage_options,
            )
        fn = self.function("train", "batch_predict")
        with self._modal_errors(self.train_app, "batch_predict"):
            return dict(fn.remote(model_json, text, output_uri, keep))

"""ModalResource: local vs Modal by config, references over the wire, fast credential failures."""

import dagster as dg
import modal
import modal.exception
import polars as pl
import pytest

from lakeloom.core.cv import evaluate
from lakeloom.core.specs import PredictSpec
from lakeloom.modal_apps import train
from lakeloom.modal_apps.config import TrainConfig
from lakeloom.modal_apps.credentials import ModalCredentialsError, credentials_source
from lakeloom.resources import modal as modal_resource
from lakeloom.resources.llm import LLMResource
from lakeloom.resources.modal import ModalAppNotFoundError, ModalResource
from lakeloom.storage.delta import read_table, write_table
from lakeloom.storage.ref import Ref, ref
from tests.fixtures.network import record_network
from tests.modal_apps.test_train import cancer_frame

SPEC = PredictSpec(
    features=("embedding", "mean_radius", "worst_area", "site"),
    target="target",
    estimator="lightgbm",
    param_grid={"num_leaves": (7,), "n_estimators": (30,)},
    outer_folds=3,
    inner_folds=2,
    seed=3,
)


@pytest.fixture
def cancer_ref(storage) -> Ref:
    write_table(
        cancer_frame(),
        storage.table_uri("assets", "cancer"),
        mode="overwrite",
        partition_by=["split"],
    )
    return ref("cancer", partition="train", storage=storage)


class DeployedStandIn:
    """What ``modal.Function.from_name`` returns, for one deployed training function.

    Modal cannot run here, so ``map``/``remote`` run the real Modal function's body with
    ``.local()``; the stand-in records every argument so tests can check only references travel.
    """

    calls: list[tuple[str, tuple]] = []

    def __init__(self, app: str, name: str, environment_name: str | None = None) -> None:
        self.app, self.name, self.environment = app, name, environment_name

    def _body(self):
        return getattr(train, self.name)

    def map(self, *iterables):
        for args in zip(*iterables, strict=True):
            self.calls.append((self.name, args))
            yield self._body().local(*args)

    def remote(self, *args):
        self.calls.append((self.name, args))
        return self._body().local(*args)

    def get_web_url(self) -> str:
        return f"https://ws--{self.app}-{self.name}.modal.run/"


@pytest.fixture
def deployed(monkeypatch):
    """Modal mode with the deployed functions replaced by stand-ins and credentials present."""
    DeployedStandIn.calls = []
    monkeypatch.setattr(modal_resource, "require_credentials", lambda: "test stand-in")
    monkeypatch.setattr(modal.Function, "from_name", DeployedStandIn)
    return DeployedStandIn


def test_local_mode_points_at_the_local_servers():
    res = ModalResource()
    assert res.mode == "local" and res.check_credentials() is None
    emb, gen = res.embeddings_endpoint(), res.generation_endpoint()
    assert emb.base_url == "http://127.0.0.1:8082/v1"
    assert emb.model == "sentence-transformers/all-MiniLM-L6-v2"
    assert gen.structured_output == "json_object"  # llama.cpp's schema format
    llm = res.llm_resource("generation", pool="llm-local")
    assert isinstance(llm, LLMResource)
    assert (llm.kind, llm.base_url, llm.structured_output, llm.pool) == (
        "compatible",
        "http://127.0.0.1:8081/v1",
        "json_object",
        "llm-local",
    )


def test_local_mode_trains_in_process_like_the_core(cancer_ref, tmp_path):
    res = ModalResource(mode="local", models_root=str(tmp_path / "models"))
    result = res.nested_cv(cancer_ref, SPEC)
    expected = evaluate(cancer_ref.lazy().collect(), SPEC)
    assert result.report.drop("seconds").equals(expected.report.drop("seconds"))
    parallel = res.nested_cv(cancer_ref, SPEC.model_copy(update={"n_jobs": 2}))
    assert parallel.report.drop("seconds").equals(result.report.drop("seconds"))
    model = res.fit(cancer_ref, SPEC, "cancer", cv_metrics=result.summary())
    assert model.version == 1 and model.uri.startswith(str(tmp_path / "models"))


def test_modal_mode_maps_folds_with_references_not_frames(cancer_ref, deployed, tmp_path):
    res = ModalResource(mode="modal", environment="staging", train_app="team-train")
    with pytest.warns(UserWarning, match="executing locally"):
        result = res.nested_cv(cancer_ref, SPEC)
    expected = evaluate(cancer_ref.lazy().collect(), SPEC)
    assert result.report.drop("seconds").equals(expected.report.drop("seconds"))
    assert [c[0] for c in deployed.calls] == ["run_fold"] * 3
    for _, (ref_text, spec_json, fold) in deployed.calls:
        assert isinstance(ref_text, str) and Ref.from_json(ref_text) == cancer_ref
        assert isinstance(spec_json, str) and isinstance(fold, int)
    assert {c[1][2] for c in deployed.calls} == {0, 1, 2}


def test_modal_mode_endpoints_use_the_deployed_web_urls(deployed):
    res = ModalResource(mode="modal", tei_app="my-tei", generation_model="qwen7b")
    assert res.embeddings_endpoint().base_url == "https://ws--my-tei-serve.modal.run/v1"
    gen = res.generation_endpoint()
    assert gen.base_url == "https://ws--lakeloom-vllm-serve.modal.run/v1"
    assert (gen.model, gen.structured_output) == ("qwen7b", "json_schema")
    pinned = ModalResource(mode="modal", tei_url="https://x--tei.modal.run")
    assert pinned.embeddings_endpoint().base_url == "https://x--tei.modal.run/v1"


@pytest.fixture
def network(monkeypatch):
    """Every connection and name lookup attempted: failing fast means failing before any."""
    return record_network(monkeypatch)


def test_modal_mode_without_credentials_fails_fast_naming_what_to_set(
    no_modal_credentials, cancer_ref, network
):
    res = ModalResource(mode="modal")
    for call in (
        lambda: res.nested_cv(cancer_ref, SPEC),
        lambda: res.fit(cancer_ref, SPEC, "m"),
        res.embeddings_endpoint,
        res.generation_endpoint,
    ):
        with pytest.raises(ModalCredentialsError) as info:
            call()
        assert network == []  # refused before any network round trip (nothing to wait on)
        message = str(info.value)
        assert "MODAL_TOKEN_ID" in message and "MODAL_TOKEN_SECRET" in message
        assert "modal token new" in message


def test_a_run_with_a_modal_resource_and_no_credentials_fails_before_the_step(
    no_modal_credentials, cancer_ref, network
):
    ran = []

    @dg.asset
    def cv_report(modal: ModalResource) -> None:
        ran.append(True)
        modal.nested_cv(cancer_ref, SPEC)

    result = dg.materialize(
        [cv_report], resources={"modal": ModalResource(mode="modal")}, raise_on_error=False
    )
    assert not result.success and not ran
    failure = next(e for e in result.all_events if e.is_failure)
    text = str(failure.event_specific_data)
    assert "MODAL_TOKEN_ID" in text and "modal token new" in text
    assert network == []  # failed at resource set-up, before any call to Modal
    # The same resource in local mode runs the step.
    assert dg.materialize([cv_report], resources={"modal": ModalResource()}).success


def test_modal_auth_error_is_reported_as_missing_credentials(
    no_modal_credentials, monkeypatch, network
):
    """A real AuthError from the Modal client (token missing) becomes the same clear error."""
    monkeypatch.setattr(modal_resource, "require_credentials", lambda: "stale profile")
    res = ModalResource(mode="modal")
    with pytest.raises(ModalCredentialsError, match="MODAL_TOKEN_ID") as info:
        res.embeddings_endpoint()
    assert network == []  # the client's own check, before any round trip
    assert isinstance(info.value.__cause__, modal.exception.AuthError)


def test_undeployed_app_names_the_deploy_command(deployed, monkeypatch):
    def not_found(self):
        raise modal.exception.NotFoundError("App 'lakeloom-tei' not found")

    monkeypatch.setattr(DeployedStandIn, "get_web_url", not_found)
    with pytest.raises(ModalAppNotFoundError, match="lakeloom modal deploy"):
        ModalResource(mode="modal").embeddings_endpoint()


def test_batch_predict_in_modal_mode_returns_a_table_reference(
    cancer_ref, deployed, storage, tmp_path, monkeypatch
):
    # The stand-in runs the training app's bodies here, so its model volume is a local folder.
    monkeypatch.setattr(train, "config", TrainConfig(models_mount=str(tmp_path / "volume")))
    res = ModalResource(mode="modal")
    with pytest.warns(UserWarning, match="executing locally"):
        model = res.fit(cancer_ref, SPEC, "cancer")
        out = res.batch_predict(
            model,
            ref("cancer", partition="new", storage=storage),
            storage.table_uri("assets", "predictions"),
            keep_columns=["id", "split"],
        )
    assert model.uri.startswith(str(tmp_path / "volume"))
    new_rows = cancer_frame().filter(pl.col("split") == "new").height
    assert out["rows"] == new_rows == read_table(out["uri"]).height
    assert [c[0] for c in deployed.calls] == ["final_fit", "batch_predict"]


def test_credentials_sources(tmp_path):
    assert credentials_source({"MODAL_CONFIG_PATH": str(tmp_path / "none.toml")}) is None
    env = {"MODAL_TOKEN_ID": "ak-1", "MODAL_TOKEN_SECRET": "as-1"}
    assert credentials_source(env) == "env MODAL_TOKEN_ID/MODAL_TOKEN_SECRET"
    toml = tmp_path / "modal.toml"
    toml.write_text(
        '[default]\ntoken_id = "ak-a"\n\n[work]\ntoken_id = "ak-b"\ntoken_secret = "as-b"\n'
        "active = true\n"
    )
    found = credentials_source({"MODAL_CONFIG_PATH": str(toml)})
    assert found == f"{toml} profile 'work'"
    # The default profile lacks a secret: explicitly selecting it finds no usable token.
    assert credentials_source({"MODAL_CONFIG_PATH": str(toml), "MODAL_PROFILE": "default"}) is None
    assert "ak-" not in found  # names the source, never the token


def test_definitions_with_a_modal_resource_validate_offline(no_modal_credentials, monkeypatch):
    """Loading and validating Definitions neither needs credentials nor touches the network."""
    import socket

    def no_network(*args, **kwargs):
        raise AssertionError("network call while validating definitions")

    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)

    @dg.asset
    def embeddings(modal: ModalResource) -> None:
        modal.embeddings_endpoint()

    defs = dg.Definitions(
        assets=[embeddings], resources={"modal": ModalResource(mode="modal", environment="prod")}
    )
    dg.Definitions.validate_loadable(defs)
    assert "modal" in defs.get_assets_def("embeddings").required_resource_keys

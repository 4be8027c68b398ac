"""What an LLM asset does when rows or settings are wrong, through real Dagster runs against the
provider simulator: keys that do not identify rows (issue 13.4), re-runs of failed rows that
ask again (17.1) and check only the selected partitions (17.2), deterministic errors that are
not retried (17.3), errors that name the row's key (17.6), a failed blocking check that names
its cause (17.9) and ``_reason`` for GROUP BY (17.10)."""

import dagster as dg
import polars as pl
import pytest
from pydantic import BaseModel

from lakeloom.assets.factories import embedding_asset, generated_asset
from lakeloom.resources.llm import LLMResource
from lakeloom.storage.catalog import Catalog
from tests.fixtures.delta_io import read

SHOPS = dg.StaticPartitionsDefinition(["north", "south"])
N = 12
NAMESPACE = "failures-test"  # both simulators below answer for one provider: share the cache
FAST_RETRY = dg.RetryPolicy(max_retries=2)  # no delay: count retries, never wait for them


def ticket_rows(shop: str, ids: list[str] | None = None) -> pl.DataFrame:
    ids = ids or [f"{shop}-{i:02d}" for i in range(N)]
    return pl.DataFrame(
        {
            "ticket_id": ids,
            "shop": shop,
            "body": [f"parcel {i} late, shop {shop}" for i in range(len(ids))],
        },
        schema={"ticket_id": pl.String, "shop": pl.String, "body": pl.String},
    )


def tickets_asset(rows=ticket_rows):
    @dg.asset(
        name="tickets",
        partitions_def=SHOPS,
        metadata={"partition_expr": "shop"},
        backfill_policy=dg.BackfillPolicy.single_run(),
    )
    def tickets(context: dg.AssetExecutionContext) -> pl.DataFrame:
        return pl.concat([rows(k) for k in context.partition_keys])

    return tickets


class Triage(BaseModel):
    urgent: bool
    team: str


def triage(prompt: str = "Ticket: {body}", source=None, **kwargs):
    options = {"retry_policy": None, "min_ok_ratio": 0.0, **kwargs}
    return generated_asset(
        "ticket_triage",
        source if source is not None else tickets_asset(),
        prompt,
        Triage,
        key="ticket_id",
        model="gpt-4o-mini",
        **options,
    )


@pytest.fixture
def instance(tmp_path):
    (tmp_path / "dagster").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


def llm(sim, **kwargs) -> LLMResource:
    return LLMResource(base_url=sim.base_url, max_attempts=1, cache_namespace=NAMESPACE, **kwargs)


def run(assets, resources, instance, *, partition="north", only_failed=False, selection=None):
    config = None
    if only_failed:
        config = {"ops": {"ticket_triage": {"config": {"only_failed": True}}}}
    return dg.materialize(
        assets,
        selection=selection,
        partition_key=partition,
        resources=resources,
        instance=instance,
        run_config=config,
        raise_on_error=False,
    )


def _messages(error) -> list[str]:
    out = []
    while error is not None:
        out.append(error.message)
        error = error.cause
    return out


def failure_message(result) -> str:
    """The step failure's message, with its causes (Dagster wraps a last retry's failure)."""
    events = result.get_step_failure_events()
    assert events, "the step should have failed"
    return "\n".join(_messages(events[0].step_failure_data.error))


def retries(result) -> int:
    return sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events)


# -- issue 13.4: keys must identify rows -------------------------------------------------------


@pytest.mark.parametrize("problem", ["duplicate", "null"])
@pytest.mark.parametrize("kind", ["generated", "embedding"])
def test_duplicate_or_null_keys_refused_before_any_request(
    problem, kind, sim_server, io_manager, instance
):
    sim = sim_server()
    ids = [f"n-{i}" for i in range(N)]
    if problem == "duplicate":
        ids[5] = ids[7] = "n-3"
    else:
        ids[4] = None
    source = tickets_asset(lambda shop: ticket_rows(shop, ids))
    if kind == "generated":
        asset = triage(source=source)
    else:
        asset = embedding_asset(
            "ticket_triage", source, "body", key="ticket_id", model="sim-embed", retry_policy=None
        )
    resources = {"io_manager": io_manager, "llm": llm(sim), "embedder": llm(sim)}
    result = run([source, asset], resources, instance)
    assert not result.success
    message = failure_message(result)
    assert "key column(s) 'ticket_id'" in message and "upstream asset tickets" in message
    if problem == "duplicate":
        assert "ticket_id=n-3 (3 rows)" in message and '"body": "parcel 5 late' in message
    else:
        assert "1 row(s) with a null key" in message and '"ticket_id": null' in message
    assert retries(result) == 0
    stats = sim.stats()
    assert stats["received"] == stats["served"] == 0  # nothing was sent, nothing paid


# -- issue 17.1: a re-run of failed rows asks again ----------------------------------------------


def test_only_failed_rerun_asks_again_for_invalid_answers(sim_server, io_manager, instance):
    labels = triage(max_repairs=2)
    broken = sim_server(malformed_rate=1.0, seed=3)
    first = run([tickets_asset(), labels], {"io_manager": io_manager, "llm": llm(broken)}, instance)
    assert first.success
    before = read(io_manager, "ticket_triage")
    assert set(before["_status"]) == {"error"} and set(before["_reason"]) == {"invalid_output"}
    assert before["_error"].str.starts_with("invalid output after 3 attempts").all()
    assert broken.stats()["served"] == 3 * N  # first answers + 2 repair rounds, all cached

    healthy = sim_server()
    second = run(
        [tickets_asset(), labels],
        {"io_manager": io_manager, "llm": llm(healthy)},
        instance,
        only_failed=True,
        selection=[labels],
    )
    assert second.success
    after = read(io_manager, "ticket_triage")
    assert set(after["_status"]) == {"ok"}, after["_error"].to_list()
    assert healthy.stats()["served"] == N  # asked again, once per row: no replay from the cache
    assert after["_supersedes"].to_list() == before["_request_hash"].to_list()
    assert not set(after["_request_hash"]) & set(before["_request_hash"])

    third = run(  # the same re-run again (or a step retry of it): nothing left to ask
        [tickets_asset(), labels],
        {"io_manager": io_manager, "llm": llm(healthy)},
        instance,
        only_failed=True,
        selection=[labels],
    )
    assert third.success and healthy.stats()["served"] == N
    assert read(io_manager, "ticket_triage").equals(after)

    full = run([tickets_asset(), labels], {"io_manager": io_manager, "llm": llm(healthy)}, instance)
    assert full.success and healthy.stats()["served"] == N  # a full run: the fixed answers,
    again = read(io_manager, "ticket_triage")  # from the cache, not the invalid ones replayed
    assert set(again["_status"]) == {"ok"}
    assert again.select("ticket_id", "output").equals(after.select("ticket_id", "output"))


def test_only_failed_keeps_valid_answers_and_reuses_the_cache(sim_server, io_manager, instance):
    labels = triage(max_repairs=0)
    flaky = sim_server(malformed_rate=0.5, seed=11)
    assert run([tickets_asset(), labels], {"io_manager": io_manager, "llm": llm(flaky)}, instance)
    before = read(io_manager, "ticket_triage")
    failed = before.filter(pl.col("_status") == "error")
    assert 0 < failed.height < N
    healthy = sim_server()
    result = run(
        [tickets_asset(), labels],
        {"io_manager": io_manager, "llm": llm(healthy)},
        instance,
        only_failed=True,
        selection=[labels],
    )
    assert result.success and healthy.stats()["served"] == failed.height
    after = read(io_manager, "ticket_triage")
    assert set(after["_status"]) == {"ok"}
    ok_before = before.filter(pl.col("_status") == "ok")
    kept = after.join(ok_before.select("ticket_id"), on="ticket_id", how="semi")
    assert kept.select("ticket_id", "output", "_request_hash").equals(
        ok_before.select("ticket_id", "output", "_request_hash")
    )
    assert kept["_supersedes"].null_count() == kept.height


def test_only_failed_does_not_ask_again_for_rows_that_failed_in_transit(
    sim_server, io_manager, instance
):
    """A 5xx left nothing in the cache: the re-run asks under the normal key, so the answer is
    cached where every later run looks for it."""
    labels = triage()
    assert run(
        [tickets_asset(), labels],
        {"io_manager": io_manager, "llm": llm(sim_server(fail_5xx=0.5, seed=5))},
        instance,
    ).success
    before = read(io_manager, "ticket_triage")
    assert set(before.filter(pl.col("_status") == "error")["_reason"]) == {"http_5xx"}
    healthy = sim_server()
    assert run(
        [tickets_asset(), labels],
        {"io_manager": io_manager, "llm": llm(healthy)},
        instance,
        only_failed=True,
        selection=[labels],
    ).success
    after = read(io_manager, "ticket_triage")
    assert set(after["_status"]) == {"ok"} and after["_supersedes"].null_count() == N


# -- issue 17.2: the code-version guard checks the selected partitions only ----------------------


def test_only_failed_guard_checks_only_the_selected_partitions(sim_server, io_manager, instance):
    sim = sim_server()
    resources = {"io_manager": io_manager, "llm": llm(sim)}
    old = triage("Ticket: {body}")
    assert run([tickets_asset(), old], resources, instance, partition="north").success
    assert run([tickets_asset(), old], resources, instance, partition="south").success
    new = triage("Is this ticket urgent? {body}")
    assert run([tickets_asset(), new], resources, instance, partition="south").success
    rerun = run(
        [tickets_asset(), new],
        resources,
        instance,
        partition="south",
        only_failed=True,
        selection=[new],
    )
    assert rerun.success, failure_message(rerun)
    stale = run(
        [tickets_asset(), new],
        resources,
        instance,
        partition="north",
        only_failed=True,
        selection=[new],
    )
    assert not stale.success and "partition north" in failure_message(stale)


# -- issues 17.3 / 17.6 / 17.9: deterministic errors fail once, naming rows and causes -----------


def test_wrong_key_fails_at_once_naming_http_401_with_counts(sim_server, io_manager, instance):
    sim = sim_server(api_key="right-key")
    labels = triage(retry_policy=FAST_RETRY, min_ok_ratio=0.9)
    resources = {"io_manager": io_manager, "llm": llm(sim, api_key="wrong-key")}
    result = run([tickets_asset(), labels], resources, instance)
    assert not result.success
    message = failure_message(result)
    assert "blocking check ok_ratio failed" in message
    assert f"http_401 x{N}" in message and "Incorrect API key" in message
    assert "wrong-key" not in message
    assert retries(result) == 0  # a retry cannot fix a wrong key
    (mat,) = result.asset_materializations_for_node("ticket_triage")
    assert mat.metadata["top_reasons"].value == {"http_401": N}
    check = result.get_asset_check_evaluations()[0]
    assert not check.passed and "http_401" in (check.description or "")


def test_transient_failures_are_retried(sim_server, io_manager, instance):
    sim = sim_server(fail_5xx=1.0)
    labels = triage(retry_policy=FAST_RETRY, min_ok_ratio=0.9)
    result = run([tickets_asset(), labels], {"io_manager": io_manager, "llm": llm(sim)}, instance)
    assert not result.success
    assert retries(result) == 2  # 5xx may pass: the policy's retries are used
    assert "Exceeded max_retries of 2" in failure_message(result)
    assert "http_5xx x12" in failure_message(result)  # and the cause is named


def test_unknown_model_fails_once_naming_the_rows_by_key(sim_server, io_manager, instance):
    sim = sim_server()
    labels = generated_asset(
        "ticket_triage",
        tickets_asset(),
        "Ticket: {body}",
        Triage,
        key="ticket_id",
        model="no-such-model",
        retry_policy=FAST_RETRY,
    )
    result = run([tickets_asset(), labels], {"io_manager": io_manager, "llm": llm(sim)}, instance)
    assert not result.success
    message = failure_message(result)
    assert "no-such-model" in message and "ticket_id=north-00" in message
    assert "rows 0" not in message
    assert retries(result) == 0
    assert sim.stats()["received"] == 0


def test_missing_api_key_is_not_retried(sim_server, io_manager, instance, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    sim = sim_server()
    labels = triage(retry_policy=FAST_RETRY)
    resource = LLMResource(kind="openai", base_url=sim.base_url)
    result = run([tickets_asset(), labels], {"io_manager": io_manager, "llm": resource}, instance)
    assert not result.success
    (init,) = [e for e in result.all_events if e.event_type_value == "RESOURCE_INIT_FAILURE"]
    assert "OPENAI_API_KEY" in "\n".join(_messages(init.event_specific_data.error))
    assert retries(result) == 0 and sim.stats()["received"] == 0


# -- issue 17.10: _reason is groupable in SQL -----------------------------------------------------


def test_reason_column_groups_causes_in_sql(sim_server, io_manager, storage, instance):
    source = tickets_asset(
        lambda shop: ticket_rows(shop).with_columns(
            pl.when(pl.col("ticket_id").str.ends_with("0"))
            .then(None)
            .otherwise(pl.col("body"))
            .alias("body")
        )
    )
    labels = triage(source=source, max_repairs=0)
    vectors = embedding_asset(
        "ticket_vectors", source, "body", key="ticket_id", model="sim-embed", retry_policy=None
    )
    sim = sim_server(malformed_rate=1.0)
    resources = {"io_manager": io_manager, "llm": llm(sim), "embedder": llm(sim)}
    assert run([source, labels, vectors], resources, instance).success
    con = Catalog(storage, database=":memory:").connect()
    rows = con.sql(
        "SELECT _reason, count(*) AS n FROM ticket_triage GROUP BY _reason ORDER BY _reason"
    ).fetchall()
    assert rows == [("invalid_output", N - 2), ("skipped_null", 2)]
    errors = con.sql(
        "SELECT count(DISTINCT _error), count(DISTINCT _reason) FROM ticket_triage "
        "WHERE _status = 'error'"
    )
    details, classes = errors.fetchall()[0]
    assert details >= classes == 1  # however many offsets the details carry
    vec = con.sql("SELECT _reason, count(*) FROM ticket_vectors GROUP BY _reason ORDER BY 1")
    assert vec.fetchall() == [("skipped_null", 2), (None, N - 2)]  # DuckDB: NULLS LAST


def test_prompt_error_at_run_time_fails_once_naming_the_column(sim_server, io_manager, instance):
    """The source declares no column schema: the prompt is checked against the real frame."""
    sim = sim_server()
    labels = triage("Ticket: {subject}", retry_policy=FAST_RETRY)
    result = run([tickets_asset(), labels], {"io_manager": io_manager, "llm": llm(sim)}, instance)
    assert not result.success
    assert "'subject'" in failure_message(result) and "body" in failure_message(result)
    assert retries(result) == 0 and sim.stats()["received"] == 0

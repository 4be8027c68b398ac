"""The Dagster UI as a user sees it: ``dagster dev`` on the project, headless Chromium, real runs.

The demo graph's LLM and embedding resources point at the provider simulator; runs are
launched through the webserver's GraphQL API (as the UI's buttons do) and go through the run
queue and daemon of the project's dagster.yaml; the run notification sensors post to a local
receiver. Screenshots land in ``test-output/ui/`` (gitignored), and their paths are printed.
"""

import os
import shutil
import time
from pathlib import Path

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.ui.dagster_dev import DagsterDev, free_port, start_dagster_dev

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output" / "ui"
CHROMIUM = Path("/usr/bin/chromium")
DEMO_ASSETS = [
    "reviews",
    "review_embeddings",
    "review_labels",
    "sentiment_cv",
    "sentiment_model",
    "sentiment_predictions",
]
PARTITIONED = ["reviews", "review_embeddings", "review_labels"]
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}  # one process per run: faster on 2 cores


@pytest.fixture
def dagster_ui(tmp_path, sim_server, webhook_receiver):
    """``dagster dev -m lakeloom.definitions`` on a free port, with a temp DAGSTER_HOME."""
    if not CHROMIUM.exists():
        pytest.fail("the UI test needs Debian's chromium: apt-get install -y chromium")
    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    sim = sim_server()
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "LAKELOOM_HOME": os.environ["LAKELOOM_HOME"],
        "LAKELOOM_STORAGE_ROOT": os.environ["LAKELOOM_STORAGE_ROOT"],
        "LAKELOOM_LLM_BASE_URL": sim.base_url,
        "LAKELOOM_EMBED_BASE_URL": sim.base_url,
        "LAKELOOM_LLM_STRUCTURED_OUTPUT": "json_schema",
        # price the simulated calls like a paid provider so the UI shows a real cost
        "LAKELOOM_LLM_PRICE_MODEL": "gpt-4o-mini",
        "LAKELOOM_EMBED_PRICE_MODEL": "text-embedding-3-small",
        "LAKELOOM_WEBHOOK_URL": webhook_receiver.url,
        "LAKELOOM_UI_URL": f"http://127.0.0.1:{port}",  # run links in the notifications
        "DAGSTER_DISABLE_TELEMETRY": "yes",
    }
    dev = start_dagster_dev("lakeloom.definitions", env, OUT / "dagster_dev.log", ROOT, port=port)
    try:
        yield dev, sim
    finally:
        dev.stop()


def shoot(page, name: str) -> Path:
    path = OUT / name
    page.screenshot(path=str(path))
    print(f"screenshot: {path}")
    return path


def browse(dev: DagsterDev, visit) -> None:
    """Open headless Chromium (Debian's) on the UI and run ``visit(page)``."""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            # the first-visit "Join the Dagster community" dialog, whenever it shows up
            page.add_locator_handler(
                page.get_by_role("button", name="Skip"), lambda skip: skip.click()
            )
            visit(page)
        finally:
            browser.close()


def check_graph(page, dev: DagsterDev, name: str, filled: str) -> None:
    """The lineage page lists every demo asset, draws its node, and shows partition fill."""
    page.goto(dev.url + "/asset-groups")
    for asset in DEMO_ASSETS:  # the sidebar lists every asset by its full name
        expect(page.get_by_text(asset, exact=True).first).to_be_visible(timeout=30_000)
    # make room, zoom in until the nodes show their details, and centre the graph
    page.get_by_role("button", name="panel_show_right Hide navigation").click()
    page.get_by_role("button", name="panel_show_right", exact=True).click()
    page.wait_for_timeout(1000)
    for _ in range(3):
        page.get_by_role("button", name="zoom_in").click()
        page.wait_for_timeout(400)
    page.mouse.move(800, 750)
    page.mouse.down()
    page.mouse.move(1000, 700, steps=10)
    page.mouse.up()
    for asset in DEMO_ASSETS:  # zoomed in, each node carries its full name
        expect(page.get_by_text(asset, exact=True).last).to_be_visible(timeout=15_000)
    # reviews, review_embeddings, review_labels: the share of partitions materialized
    expect(page.get_by_text(filled, exact=True)).to_have_count(3, timeout=30_000)
    page.wait_for_timeout(1000)
    shoot(page, name)


@pytest.mark.slow
def test_ui_shows_graph_runs_a_partition_and_its_metadata(dagster_ui, webhook_receiver):
    dev, sim = dagster_ui
    started = time.monotonic()
    one = dev.launch(PARTITIONED, {"dagster/partition": "nyt"}, IN_PROCESS)
    assert dev.wait_run(one, 240) == "SUCCESS"
    print(f"one partition materialized in {time.monotonic() - started:.0f}s")
    served = sim.stats()["served"]
    assert served >= 125  # every nyt row was labelled through the simulator

    def after_one_partition(page) -> None:
        check_graph(page, dev, "01_asset_graph.png", "25% filled")

        page.goto(f"{dev.url}/runs/{one}")
        expect(page.get_by_text("Success").first).to_be_visible(timeout=30_000)
        expect(page.get_by_text("review_labels").first).to_be_visible()
        page.wait_for_timeout(1500)
        shoot(page, "02_run_one_partition.png")

        page.set_viewport_size({"width": 1600, "height": 2600})  # the whole metadata table
        page.goto(dev.url + "/assets/review_labels?partition=nyt")
        columns = page.get_by_role("button", name="Columns")
        expect(columns).to_be_visible(timeout=30_000)
        columns.click()  # fold the column list so the metadata fits the screenshot
        metadata = page.locator("table").filter(has_text="rows_ok").first
        expect(metadata).to_be_visible(timeout=30_000)
        values = {
            key: metadata.get_by_role("row").filter(has_text=key).first.inner_text()
            for key in ("rows_ok", "rows_error", "cost_usd", "delta_version", "error_report")
        }
        page.get_by_role("button", name="Metadata").scroll_into_view_if_needed()
        page.wait_for_timeout(800)
        shoot(page, "03_review_labels_metadata.png")
        assert "125" in values["rows_ok"] and values["rows_error"].split()[-1] == "0"
        assert float(values["cost_usd"].split()[-1]) > 0  # priced like gpt-4o-mini
        assert values["delta_version"].split()[-1] == "0"
        assert "No failed rows" in values["error_report"]

    browse(dev, after_one_partition)

    every = dev.launch(
        [*PARTITIONED, "sentiment_cv"],
        {
            "dagster/asset_partition_range_start": "amazon",
            "dagster/asset_partition_range_end": "tweets",
        },
        IN_PROCESS,
    )
    assert dev.wait_run(every, 300) == "SUCCESS"
    print(f"all partitions + CV report in {time.monotonic() - started:.0f}s")

    def after_cv(page) -> None:
        check_graph(page, dev, "04_asset_graph_after_cv.png", "100% filled")
        page.goto(dev.url + "/assets/sentiment_cv")
        report = page.get_by_role("row").filter(has_text="Show Markdown").first
        expect(report).to_be_visible(timeout=30_000)
        report.get_by_text("[Show Markdown]").click()
        dialog = page.get_by_role("dialog")
        plot = dialog.locator("img[src^='data:image/png']").first
        expect(plot).to_be_visible(timeout=15_000)
        assert plot.evaluate("img => img.naturalWidth") > 100  # decoded, not a broken icon
        expect(dialog.get_by_text("mean", exact=True)).to_be_visible()  # the per-fold table
        page.wait_for_timeout(800)
        shoot(page, "05_sentiment_cv_report_plot.png")

    browse(dev, after_cv)

    # the daemon evaluated the notification sensors: one summary per run, with the counts
    messages = webhook_receiver.wait_for(2, 90)
    by_run = {m["run_id"]: m for m in messages}
    assert sorted(by_run) == sorted([one, every]) and len(messages) == 2
    labels = {a["asset"]: a for a in by_run[one]["assets"]}["review_labels"]
    assert labels["partitions"] == ["nyt"] and labels["rows"] == 125
    assert labels["rows_ok"] + labels["rows_error"] + labels["rows_skipped"] == 125
    assert by_run[one]["url"] == f"{dev.url}/runs/{one}"
    assert by_run[every]["partitions"] == ["amazon", "movies", "nyt", "tweets"]
    assert {a["asset"] for a in by_run[every]["assets"]} == {*PARTITIONED, "sentiment_cv"}

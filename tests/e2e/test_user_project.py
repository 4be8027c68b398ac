"""Issue 17, "what must show": a user's own project, written from the README, run through the CLIs.

In a temporary folder that is not the repo: a CSV of 60 support tickets over three daily
partitions (``file_source_asset``), a definitions file with a ``generated_asset`` (nested
Pydantic schema) and an ``embedding_asset`` against the provider simulator with faults (5 %
429s, malformed answers), then only the commands a user types: ``dagster asset materialize -f
defs.py`` (one partition, then a backfill of all three), ``lakeloom sql`` in every format,
``lakeloom forecast -f``, ``lakeloom cost --partition``, ``lakeloom errors -f`` and the re-run
command it prints, run once the provider is healthy again, and a regrouped embedding run that the
cache answers whole.
"""

import csv
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from lakeloom.sim.launch import SubprocessSim, start_subprocess

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DAYS = ["2025-03-01", "2025-03-02", "2025-03-03"]
RANGE = f"{DAYS[0]}...{DAYS[-1]}"
URL_ENV = "TICKETS_LLM_URL"
FAULTS = {"fail_429": 0.05, "malformed_rate": 0.5, "seed": 7}  # ~1 row in 8 fails 3 attempts

DEFS = textwrap.dedent(
    '''
    """Support tickets: a triage per ticket (nested schema) and an embedding of its body."""

    from pathlib import Path
    from typing import Literal

    import dagster as dg
    import polars as pl
    from pydantic import BaseModel, Field

    from lakeloom.assets.factories import embedding_asset, generated_asset
    from lakeloom.assets.sources import file_source_asset
    from lakeloom.io_managers import DeltaIOManager
    from lakeloom.resources.llm import LLMResource

    HERE = Path(__file__).parent
    days = dg.DailyPartitionsDefinition(start_date="2025-03-01", end_date="2025-03-04")
    tickets = file_source_asset(
        "tickets", HERE / "tickets.csv",
        {"ticket_id": pl.String, "day": pl.Date, "subject": pl.String, "body": pl.String},
        key="ticket_id", partitions_def=days, partition_column="day",
    )


    class Customer(BaseModel):
        tier: Literal["free", "pro", "enterprise"] = Field(description="Plan of the customer.")
        tags: list[str] = Field(description="Short topic tags.")


    class Triage(BaseModel):
        urgency: Literal["low", "medium", "high"] = Field(description="How soon to answer.")
        product: str = Field(description="Product the customer writes about.")
        customer: Customer


    ticket_triage = generated_asset(
        "ticket_triage", source=tickets, key="ticket_id", model="gpt-4o-mini",
        prompt="Subject: {subject}\\n\\n{body}", output=Triage, max_tokens=96, min_ok_ratio=0.5,
    )
    ticket_vectors = embedding_asset(
        "ticket_vectors", source=tickets, column="body", key="ticket_id",
        model="text-embedding-3-small", dimensions=64, batch_size=8,
    )
    provider = dict(kind="compatible", base_url=dg.EnvVar("TICKETS_LLM_URL"), max_attempts=4)
    defs = dg.Definitions(
        assets=[tickets, ticket_triage, ticket_vectors],
        resources={
            "io_manager": DeltaIOManager(),
            "llm": LLMResource(**provider, rpm=6_000, pool="llm-llm"),
            "embedder": LLMResource(**provider, pool="llm-embedder"),
        },
    )
    '''
)


def write_tickets(path: Path) -> None:
    products = ["router", "billing portal", "mobile app", "printer"]
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ticket_id", "day", "subject", "body"])
        for i in range(60):
            product = products[i % len(products)]
            out.writerow(
                [f"T{i:03d}", DAYS[i // 20], f"{product} issue #{i}",
                 f"Hello, my {product} stopped working after update {i}. Please help, order {i}."]
            )  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Project:
    """The user's folder and the commands they run there."""

    def __init__(self, folder: Path, port: int) -> None:
        self.folder = folder
        self.port = port
        self.sim: SubprocessSim | None = None
        self.log: list[tuple[float, str]] = []  # (seconds, command): printed for slow-run triage
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        self.env.update(
            DAGSTER_HOME=str(folder / ".dagster"),
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            **{URL_ENV: f"http://127.0.0.1:{port}/v1"},
        )

    def provider(self, **options: Any) -> SubprocessSim:
        """(Re)start the simulator on the same address: the same provider, new behaviour."""
        if self.sim is not None:
            self.sim.stop()
        self.sim = start_subprocess(host="127.0.0.1", port=self.port, **options)
        return self.sim

    def run(self, argv: list[str], *, ok: bool = True) -> subprocess.CompletedProcess[str]:
        exe = BIN / argv[0]
        start = time.monotonic()
        proc = subprocess.run(
            [str(exe), *argv[1:]], cwd=self.folder, env=self.env, capture_output=True,
            text=True, timeout=300,
        )  # fmt: skip
        self.log.append((time.monotonic() - start, shlex.join(argv)[:120]))
        if ok:
            assert proc.returncode == 0, (
                f"{shlex.join(argv)}\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
            )
        return proc

    def materialize(self, select: str, *where: str) -> None:
        self.run(["dagster", "asset", "materialize", "-f", "defs.py", "--select", select, *where])

    def sql(self, query: str, fmt: str = "json") -> str:
        return self.run(["lakeloom", "sql", "--format", fmt, query]).stdout

    def rows(self, query: str) -> list[dict[str, Any]]:
        return json.loads(self.sql(query))

    def embedding_requests(self) -> int:
        assert self.sim is not None
        return self.sim.stats()["endpoints"].get("embeddings", 0)


@pytest.fixture
def project(tmp_path: Path):
    folder = tmp_path / "support_tickets"
    (folder / ".dagster").mkdir(parents=True)
    assert REPO not in folder.parents and Path.cwd() != folder
    shutil.copy(REPO / "dagster.yaml", folder / ".dagster" / "dagster.yaml")  # queue and pools
    write_tickets(folder / "tickets.csv")
    (folder / "defs.py").write_text(DEFS)
    user = Project(folder, free_port())
    yield user
    if user.sim is not None:
        user.sim.stop()
    print("\n".join(f"{seconds:6.1f} s  {command}" for seconds, command in user.log))


STATUS = "SELECT _status, count(*) AS n FROM ticket_triage GROUP BY 1 ORDER BY 1"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_users_ticket_project_end_to_end(project: Project):
    sim = project.provider(**FAULTS)

    # 1. one partition of embeddings first, then a single-run backfill of everything
    project.materialize("tickets", "--partition-range", RANGE)
    project.materialize("ticket_vectors", "--partition", DAYS[0])
    first_day_requests = project.embedding_requests()
    assert first_day_requests >= 3  # 20 rows in batches of 8 (plus any injected 429s)
    project.materialize("ticket_triage,ticket_vectors", "--partition-range", RANGE)
    assert sim.stats()["rejected_429_injected"] > 0 and sim.stats()["malformed"] > 0

    statuses = {r["_status"]: r["n"] for r in project.rows(STATUS)}
    failed = statuses.get("error", 0)
    assert sum(statuses.values()) == 60 and 0 < failed < 60, statuses
    vectors = project.rows("SELECT _status, count(*) AS n FROM ticket_vectors GROUP BY 1")
    assert vectors == [{"_status": "ok", "n": 60}]

    # 2. lakeloom sql in every format, on the nested struct (with a list) and the embedding
    joined = (
        "SELECT t.ticket_id, t.day, t.output, t._status, v.embedding FROM ticket_triage t "
        "JOIN ticket_vectors v USING (ticket_id) ORDER BY 1"
    )
    assert "(60 rows)" in project.sql(joined, "table")
    as_csv = list(csv.DictReader(io.StringIO(project.sql(joined, "csv"))))
    as_json = json.loads(project.sql(joined, "json"))
    assert len(as_csv) == len(as_json) == 60
    assert {"output.urgency", "output.customer.tier", "output.customer.tags"} <= set(as_csv[0])
    ok = next(i for i, r in enumerate(as_json) if r["_status"] == "ok")
    assert as_json[ok]["output"]["customer"]["tags"] == json.loads(
        as_csv[ok]["output.customer.tags"]
    )
    assert len(as_json[ok]["embedding"]) == len(json.loads(as_csv[ok]["embedding"])) == 64

    # 3. lakeloom forecast -f: rows, not requests; nothing sent
    before = sim.stats()["received"]
    fc = json.loads(
        project.run(
            ["lakeloom", "forecast", "ticket_vectors", "-f", "defs.py", "--partitions", DAYS[1],
             "--json"]
        ).stdout
    )  # fmt: skip
    assert fc["rows"] == 20 and fc["partitions"] == [DAYS[1]]
    assert sim.stats()["received"] == before

    # 4. lakeloom cost --partition: spend recorded per partition whatever the run shape
    spent = {}
    for day in DAYS:
        out = project.run(["lakeloom", "cost", "--partition", day, "--json"]).stdout
        assert "no spend recorded" not in out, f"{day}: {out}"
        spent[day] = sum(json.loads(line)["cost_usd"] for line in out.splitlines())
    total = sum(json.loads(line)["cost_usd"] for line in project.run(
        ["lakeloom", "cost", "--json"]).stdout.splitlines())  # fmt: skip
    # `lakeloom cost` rounds each group to 1e-6 USD: the parts may differ from the total by that
    assert all(v > 0 for v in spent.values())
    assert sum(spent.values()) == pytest.approx(total, abs=1e-6 * (len(DAYS) + 1))

    # 5. lakeloom errors -f: the failed rows and a re-run command for *this* project
    report = project.run(["lakeloom", "errors", "-f", "defs.py"]).stdout
    assert "ticket_triage" in report and "lakeloom.definitions" not in report
    commands = [
        line.strip()
        for line in report.splitlines()
        if line.strip().startswith("dagster asset materialize -f defs.py")
    ]
    assert commands, report
    rerun = shlex.split(commands[0])
    assert "only_failed" in commands[0] and "--select" in rerun

    # 6. the provider is healthy again: the printed command turns every failed row ok
    healthy = project.provider(seed=7)
    project.run(rerun)
    assert healthy.stats()["endpoints"].get("chat.completions", 0) >= failed  # asked again
    assert project.rows(STATUS) == [{"_status": "ok", "n": 60}]
    assert healthy.stats()["endpoints"].get("embeddings", 0) == 0  # vectors untouched

    # 7. embeddings regrouped (one partition alone, then all) come from the cache, whole
    for where in (["--partition", DAYS[1]], ["--partition-range", RANGE]):
        project.materialize("ticket_vectors", *where)
        assert project.embedding_requests() == 0, where
    assert project.rows("SELECT count(*) AS n FROM ticket_vectors WHERE _status = 'ok'") == [
        {"n": 60}
    ]
    fc = json.loads(
        project.run(["lakeloom", "forecast", "ticket_triage", "-f", "defs.py", "--json"]).stdout
    )
    assert fc["rows"] == 60 and fc["requests_to_send"] == 0

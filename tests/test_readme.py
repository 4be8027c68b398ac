"""Every ```python and ```bash block of README.md runs, so the README cannot drift from the code.

Each block is one test, run in a temporary project folder (not the repo) against a provider
simulator: python blocks in a subprocess, after the earlier python blocks of the same ``##``
section (a section's blocks build on each other); bash blocks with ``bash -euo pipefail``. An
HTML comment right before a block steers it:

* ``<!-- readme-test: skip (reason) -->``: not run here (``make``, Modal, remote services); the
  reason is required and skips are few;
* ``<!-- readme-test: setup=NAME[,NAME] -->``: prepare the folder first (see ``SETUPS``).

The folder holds ``.venv`` (a link to the repo's venv, for ``.venv/bin/lakeloom``) and sits
beside ``lakeloom`` (a link to the repo, for ``cp ../lakeloom/dagster.yaml``), as a user's
project beside a lakeloom checkout would.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lakeloom.sim.launch import SubprocessSim, start_subprocess

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
LANGS = {"python": "python", "bash": "bash", "sh": "bash"}
DIRECTIVE = re.compile(r"<!--\s*readme-test:\s*(?P<body>.*?)\s*-->")
MAX_SKIPS = 8


@dataclass
class Block:
    """One fenced block of the README and how to run it."""

    line: int
    lang: str
    code: str
    section: str
    skip: str | None = None
    setups: list[str] = field(default_factory=list)
    before: list[str] = field(default_factory=list)  # earlier python blocks of its section

    @property
    def id(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")[:40]
        return f"L{self.line}-{self.lang}-{slug}"


def parse(text: str) -> list[Block]:
    """The README's python and shell blocks, with their directives and section."""
    blocks: list[Block] = []
    lines = text.splitlines()
    section, directive, i = "", None, 0
    by_section: dict[str, list[str]] = {}
    while i < len(lines):
        line = lines[i]
        if line.startswith("## "):
            section, directive = line[3:].strip(), None
        elif m := DIRECTIVE.search(line):
            directive = m.group("body")
        elif line.startswith("```"):
            lang = line[3:].strip()
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            if lang in LANGS:
                block = Block(i + 1, LANGS[lang], "\n".join(lines[i + 1 : end]) + "\n", section)
                apply_directive(block, directive)
                if block.lang == "python" and block.skip is None:
                    block.before = list(by_section.get(section, []))
                    by_section.setdefault(section, []).append(block.code)
                blocks.append(block)
            directive, i = None, end
        elif line.strip():
            directive = None  # a directive applies to the block right after it
        i += 1
    return blocks


def apply_directive(block: Block, directive: str | None) -> None:
    if directive is None:
        return
    if directive.startswith("skip"):
        reason = re.fullmatch(r"skip\s*\((?P<why>.+)\)", directive)
        assert reason, f"README line {block.line}: a skip needs a reason: skip (why)"
        block.skip = reason.group("why")
    elif directive.startswith("setup="):
        block.setups = [s.strip() for s in directive.removeprefix("setup=").split(",")]
        unknown = set(block.setups) - set(SETUPS)
        assert not unknown, f"README line {block.line}: unknown setup(s) {sorted(unknown)}"
    else:
        raise AssertionError(f"README line {block.line}: unknown directive {directive!r}")


# -- setups --------------------------------------------------------------------------------------


def tickets_csv(folder: Path, block: Block) -> None:
    """The ``tickets.csv`` of the README's own project: 12 tickets over three days."""
    with (folder / "tickets.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["ticket_id", "day", "subject", "body"])
        for i in range(12):
            day = f"2025-03-0{1 + i % 3}"
            out.writerow([f"T{i}", day, f"order {i}", f"My router {i} drops the connection."])


def defs_py(folder: Path, block: Block) -> None:
    """``defs.py``: the python blocks of the block's section, in order."""
    python = [
        b.code for b in BLOCKS if b.section == block.section and b.lang == "python" and not b.skip
    ]
    (folder / "defs.py").write_text("\n".join(python))


def demo_assets(folder: Path, block: Block) -> str:
    """The demo's assets, which the Predictions and Batch API blocks build on."""
    return (
        "from lakeloom.demos.graph import ReviewLabel, review_embeddings, review_labels, reviews\n"
        "from lakeloom.assets.factories import generated_asset\n"
    )


def demo_tables(folder: Path, block: Block) -> None:
    """Demo-shaped tables written by the Delta IO manager (as ``make demo`` would leave them).

    ``review_labels`` (struct column ``llm``, four partitions, so Delta versions 0-3) and
    ``sentiment_cv``; no model is run.
    """
    code = """
import dagster as dg
import polars as pl
from lakeloom.io_managers import DeltaIOManager

parts = dg.StaticPartitionsDefinition(["amazon", "movies", "nyt", "tweets"])

@dg.asset(partitions_def=parts, metadata={"partition_expr": "source"})
def review_labels(context) -> pl.DataFrame:
    p = context.partition_key
    return pl.DataFrame({
        "id": [f"{p}{i}" for i in range(3)], "source": p,
        "llm": [{"sentiment": "positive", "topic": "product"}] * 3, "_status": "ok"})

@dg.asset
def sentiment_cv() -> pl.DataFrame:
    return pl.DataFrame({"fold": [0, 1], "accuracy": [0.8, 0.9]})

for p in parts.get_partition_keys():
    dg.materialize([review_labels], partition_key=p, resources={"io_manager": DeltaIOManager()})
dg.materialize([sentiment_cv], resources={"io_manager": DeltaIOManager()})
"""
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=folder, capture_output=True, text=True, timeout=180
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


SETUPS: dict[str, Callable[[Path, Block], str | None]] = {
    "tickets_csv": tickets_csv,
    "demo_assets": demo_assets,
    "defs_py": defs_py,
    "demo_tables": demo_tables,
}

BLOCKS = parse(README.read_text())


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def provider() -> Iterator[SubprocessSim]:
    """A healthy simulator for every block (chat with JSON schema output, embeddings)."""
    sim = start_subprocess(host="127.0.0.1", seed=3)
    yield sim
    sim.stop()


@pytest.fixture
def project(tmp_path: Path, provider: SubprocessSim) -> tuple[Path, dict[str, str]]:
    """A user's project folder beside a lakeloom checkout, and the environment blocks run in."""
    folder = tmp_path / "my_project"
    folder.mkdir()
    (tmp_path / "lakeloom").symlink_to(REPO)
    (folder / ".venv").symlink_to(REPO / ".venv")
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAGSTER_HOME")}
    env.update(
        PATH=f"{bin_dir}:{env.get('PATH', '')}",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        LLM_BASE_URL=provider.base_url,
        LAKELOOM_LLM_BASE_URL=provider.base_url,
        LAKELOOM_EMBED_BASE_URL=provider.base_url,
        LAKELOOM_TEI_URL=provider.root_url,
        LAKELOOM_VLLM_URL=provider.root_url,
        OPENAI_API_KEY="sk-readme-test-not-a-key",
    )
    return folder, env


def test_readme_directives_are_few_and_give_reasons():
    skips = [b for b in BLOCKS if b.skip]
    assert len(skips) <= MAX_SKIPS, [(b.line, b.skip) for b in skips]
    assert all(len(b.skip or "x" * 8) >= 8 for b in skips)  # a reason, not a shrug
    assert sum(b.lang == "python" for b in BLOCKS) >= 5 and sum(b.lang == "bash" for b in BLOCKS)


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs(block: Block, project: tuple[Path, dict[str, str]]):
    if block.skip:
        pytest.skip(f"README line {block.line}: {block.skip}")
    folder, env = project
    os.environ.update({k: env[k] for k in ("LAKELOOM_HOME", "LAKELOOM_STORAGE_ROOT") if k in env})
    prefix = [code for name in block.setups if (code := SETUPS[name](folder, block))]
    if block.lang == "python":
        script = folder / "readme_block.py"
        script.write_text("\n".join([*prefix, *block.before, block.code]))
        argv = [sys.executable, str(script)]
    else:
        argv = ["bash", "-euo", "pipefail", "-c", block.code]
    proc = subprocess.run(
        argv, cwd=folder, env=env, capture_output=True, text=True, timeout=240,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"README.md line {block.line} ({block.lang}) failed with exit {proc.returncode}:\n"
        f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-6000:]}"
    )
    assert "Traceback" not in proc.stderr, proc.stderr[-6000:]

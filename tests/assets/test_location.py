"""Issue 17.7: every ``lakeloom`` command that needs definitions finds the user's code location.

The real console script runs in a temporary project folder that is not the repo, as a user
would run it: ``-m``/``-f``/``-a``/``-d`` as for ``dagster``, else the folder's pyproject.toml;
a user's mistake is one line on stderr and exit 2, never a traceback.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest

from lakeloom.assets.error_table import write_error_report
from lakeloom.assets.location import CodeLocation, CodeLocationError, location_from_pyproject
from lakeloom.storage.errors import ErrorTable
from lakeloom.storage.settings import Storage

LAKELOOM = str(Path(sys.executable).with_name("lakeloom"))

DEFS = textwrap.dedent(
    """
    import dagster as dg
    import polars as pl

    from lakeloom.assets.factories import generated_asset
    from lakeloom.io_managers import DeltaIOManager
    from lakeloom.resources.llm import LLMResource

    COLUMNS = [dg.TableColumn("id", "string"), dg.TableColumn("text", "string")]


    @dg.asset(metadata={"dagster/column_schema": dg.TableSchema(columns=COLUMNS)})
    def docs() -> pl.DataFrame:
        return pl.DataFrame({"id": ["a"], "text": ["hello"]})


    labels = generated_asset("labels", docs, "Text: {text}", str, key="id", model="gpt-4o-mini")
    defs = dg.Definitions(
        assets=[docs, labels],
        resources={
            "io_manager": DeltaIOManager(),
            "llm": LLMResource(base_url="http://127.0.0.1:9/v1", pool="llm-llm"),
        },
    )
    """
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A user's project folder outside the repo, holding defs.py."""
    folder = tmp_path / "my_project"
    folder.mkdir()
    (folder / "defs.py").write_text(DEFS)
    return folder


def lakeloom(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        [LAKELOOM, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def assert_user_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_forecast_takes_a_python_file_and_a_module_from_the_project_folder(project):
    by_file = lakeloom(["forecast", "nope", "-f", "defs.py"], project)
    assert_user_error(by_file, "LLM assets here: labels")  # the file's defs were loaded
    by_module = lakeloom(["forecast", "nope", "-m", "defs"], project)
    assert_user_error(by_module, "LLM assets here: labels")
    elsewhere = lakeloom(["forecast", "nope", "-m", "defs", "-d", str(project)], project.parent)
    assert_user_error(elsewhere, "LLM assets here: labels")
    with_attr = lakeloom(["forecast", "nope", "-f", "defs.py", "-a", "defs"], project)
    assert_user_error(with_attr, "LLM assets here: labels")


def test_user_mistakes_are_one_line_and_exit_2(project):
    assert_user_error(lakeloom(["forecast", "labels", "-m", "nodefs"], project), "nodefs")
    assert_user_error(lakeloom(["forecast", "labels", "-f", "gone.py"], project), "gone.py")
    (project / "empty.py").write_text("X = 1\n")
    assert_user_error(
        lakeloom(["forecast", "labels", "-f", "empty.py"], project), "0 Definitions objects"
    )
    (project / "broken.py").write_text("import dagster\nraise ValueError('prompt names {nope}')\n")
    assert_user_error(
        lakeloom(["forecast", "labels", "-f", "broken.py"], project),
        "ValueError: prompt names {nope}",
    )
    assert_user_error(
        lakeloom(["forecast", "labels", "-f", "defs.py", "-a", "other"], project), "'other'"
    )
    assert_user_error(lakeloom(["forecast", "labels"], project), "no code location given")


def test_pyproject_tool_dagster_and_dg_settings_are_the_default(project):
    (project / "pyproject.toml").write_text('[tool.dagster]\nmodule_name = "defs"\n')
    assert_user_error(lakeloom(["forecast", "nope"], project), "LLM assets here: labels")
    (project / "pyproject.toml").write_text(
        '[tool.dg]\ndirectory_type = "project"\n\n[tool.dg.project]\nroot_module = "pkg"\n'
        'code_location_target_module = "defs"\n'
    )
    assert_user_error(lakeloom(["forecast", "nope"], project), "LLM assets here: labels")


def test_pyproject_reading_follows_dagster(tmp_path):
    assert location_from_pyproject(tmp_path) is None
    (tmp_path / "pyproject.toml").write_text(
        '[tool.dg.project]\nroot_module = "acme"\nautoload_defs = true\n'
    )
    found = location_from_pyproject(tmp_path)
    assert found is not None and found.flags() == ["--autoload-defs-module-name", "acme.defs"]
    (tmp_path / "pyproject.toml").write_text("[tool.dg.project]\nroot_module = 'acme'\n")
    assert location_from_pyproject(tmp_path).flags() == ["-m", "acme.definitions"]  # type: ignore[union-attr]
    (tmp_path / "pyproject.toml").write_text("[tool.dagster\n")
    with pytest.raises(CodeLocationError, match="not valid TOML"):
        location_from_pyproject(tmp_path)
    loc = CodeLocation("file", "my defs.py", attribute="defs", working_directory="proj")
    assert loc.shell_flags() == "-f 'my defs.py' -a defs -d proj"


def failed_rows(storage: Storage) -> None:
    frame = pl.DataFrame(
        {
            "id": ["a", "b"],
            "day": ["2025-03-01", "2025-03-01"],
            "_status": ["error", "ok"],
            "_error": ["HTTP 503: busy", None],
            "_request_hash": ["h1", "h2"],
            "_model": ["m", "m"],
            "_attempts": [3, 1],
        }
    )
    write_error_report(
        frame,
        asset="labels",
        run_id="r1",
        keys=["id"],
        partition_columns=["day"],
        errors=ErrorTable(storage),
    )


def test_errors_prints_a_rerun_command_for_the_users_location(project):
    """``lakeloom errors`` printed ``-m lakeloom.definitions`` whatever the project."""
    failed_rows(Storage.from_env())
    by_file = lakeloom(["errors", "-f", "defs.py"], project)
    assert by_file.returncode == 0, by_file.stderr
    assert "dagster asset materialize -f defs.py --select labels --partition 2025-03-01" in (
        by_file.stdout
    )
    by_module = lakeloom(["errors", "-m", "defs", "-d", str(project)], project.parent)
    assert f"dagster asset materialize -m defs -d {project} --select labels" in by_module.stdout
    (project / "pyproject.toml").write_text('[tool.dagster]\nmodule_name = "defs"\n')
    from_pyproject = lakeloom(["errors"], project)
    assert "dagster asset materialize -m defs --select labels" in from_pyproject.stdout
    assert "lakeloom.definitions" not in by_file.stdout + by_module.stdout + from_pyproject.stdout
    assert_user_error(lakeloom(["errors", "-f", "gone.py"], project), "gone.py")


def test_errors_without_flags_names_the_location_the_run_came_from(project, tmp_path, monkeypatch):
    """No flags, no pyproject.toml: the failed run's own code origin (from its instance)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    run = lakeloom_bin("dagster", ["asset", "materialize", "-f", "defs.py", "--select", "docs"],
                       project)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        run_id = instance.get_runs(limit=1)[0].run_id
    frame = pl.DataFrame(
        {"id": ["a"], "_status": ["error"], "_error": ["HTTP 503: busy"],
         "_request_hash": ["h1"], "_model": ["m"], "_attempts": [3]}
    )  # fmt: skip
    storage = Storage.from_env()
    write_error_report(
        frame, asset="labels", run_id=run_id, keys=["id"], partition_columns=[],
        errors=ErrorTable(storage),
    )  # fmt: skip
    write_error_report(
        frame, asset="labels", run_id="not-a-dagster-run", keys=["id"], partition_columns=[],
        errors=ErrorTable(storage),
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = lakeloom(["errors"], elsewhere).stdout
    assert f"dagster asset materialize -f defs.py -a defs -d {project} --select labels" in out
    assert "dagster asset materialize -f YOUR_DEFINITIONS.py --select labels" in out  # unknown run
    assert "lakeloom.definitions" not in out


def lakeloom_bin(name: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    exe = str(Path(sys.executable).with_name(name))
    return subprocess.run(
        [exe, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=180
    )

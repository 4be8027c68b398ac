"""``import lakeloom`` is the public face: every public name, lazily, without Dagster or polars.

Before issue 14 the public API was seven deep import paths (``lakeloom.assets.factories``,
``lakeloom.resources.llm``, ...) and ``lakeloom`` exposed only ``ref``/``Ref``; the package
``__init__`` files followed three conventions (empty, ``X as X``, ``__all__``) and one ran code.
"""

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import lakeloom

REPO = Path(__file__).resolve().parents[1]
PUBLIC = {
    "EmbedSpec",
    "GenerateSpec",
    "PredictSpec",
    "generated_asset",
    "embedding_asset",
    "file_source_asset",
    "cv_report_asset",
    "model_asset",
    "prediction_asset",
    "AssetOptions",
    "BatchSettings",
    "LLMResource",
    "DuckDBCatalogResource",
    "ModalResource",
    "DeltaIOManager",
    "ref",
    "Ref",
}
HEAVY = ("dagster", "polars", "duckdb", "deltalake", "openai", "pyarrow", "modal")


def _run(code: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_lakeloom_imports_neither_dagster_nor_polars():
    code = (
        "import sys, json\nimport lakeloom\n"
        f"heavy = {HEAVY!r}\n"
        "print(json.dumps({'heavy': sorted(m for m in sys.modules if m.split('.')[0] in heavy),"
        " 'ours': sorted(m for m in sys.modules if m.startswith('lakeloom.'))}))"
    )
    loaded = _run(code)
    assert loaded == {"heavy": [], "ours": []}


def test_all_lists_the_public_names():
    assert set(lakeloom.__all__) == PUBLIC
    assert set(dir(lakeloom)) >= PUBLIC


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_every_public_name_resolves_to_the_object_its_module_defines(name):
    value = getattr(lakeloom, name)
    home = lakeloom._HOMES[name]
    module = sys.modules[home]
    assert value is (module if name == "ref" else getattr(module, name))
    if name != "ref":
        assert getattr(value, "__module__", home) == home  # the defining module, not a re-export


def test_one_name_loads_only_its_own_layer():
    code = (
        "import sys, json\nimport lakeloom\nlakeloom.EmbedSpec\n"
        "print(json.dumps({'dagster': 'dagster' in sys.modules}))"
    )
    assert _run(code) == {"dagster": False}  # a spec is core: no Dagster


def test_unknown_names_raise_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'generate_asset'"):
        lakeloom.generate_asset  # noqa: B018


def test_type_checking_imports_match_the_lazy_table():
    tree = ast.parse((REPO / "lakeloom" / "__init__.py").read_text())
    guarded = next(
        n for n in tree.body if isinstance(n, ast.If) and ast.unparse(n.test) == "TYPE_CHECKING"
    )
    declared = {
        alias.asname: node.module
        for node in guarded.body
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert declared == lakeloom._HOMES


def _init_files() -> list[Path]:
    return sorted(
        p for p in (REPO / "lakeloom").rglob("__init__.py") if p.parent.name != "lakeloom"
    )


@pytest.mark.parametrize("path", _init_files(), ids=lambda p: str(p.parent.relative_to(REPO)))
def test_package_inits_hold_a_docstring_and_only_x_as_x_re_exports(path):
    """The rule in ARCHITECTURE.md: a docstring, then nothing or ``from ... import X as X``."""
    tree = ast.parse(path.read_text())
    assert ast.get_docstring(tree), f"{path}: no docstring"
    for node in tree.body[1:]:
        assert isinstance(node, ast.ImportFrom) and node.level == 0, ast.unparse(node)
        package = ".".join(path.parent.relative_to(REPO).parts)
        assert node.module and node.module.startswith(package + "."), ast.unparse(node)
        assert all(a.asname == a.name for a in node.names), ast.unparse(node)


def test_readme_imports_come_from_lakeloom_or_one_level_below():
    """Issue 14: the README shows the public face, not three-level module paths."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    modules = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for block in blocks
        for node in ast.walk(ast.parse(block))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    ours = [m for m in modules if m and m.split(".")[0] == "lakeloom"]
    assert ours, "the README imports nothing from lakeloom?"
    assert [m for m in ours if m.count(".") > 1] == []

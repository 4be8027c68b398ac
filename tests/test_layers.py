"""Import-graph check for lakeloom: no cycles, no import from a higher layer.

Reads every module under lakeloom/ with ``ast`` (module-level imports, ``if TYPE_CHECKING:`` blocks
included, function-level imports counted for layers but not for cycles) and reports:

* cycles among module-level imports (strongly connected components of size > 1),
* imports that go up a layer (``FORBIDDEN`` below).

Run alone for a report: ``python tests/test_layers.py`` (exit 1 on a finding).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

# A module under the key may not import a module under any of the values.
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "lakeloom.core": (
        "dagster",
        "lakeloom.assets",
        "lakeloom.resources",
        "lakeloom.io_managers",
        "lakeloom.sensors",
        "lakeloom.scale",
        "lakeloom.demos",
        "lakeloom.components",
    ),
    "lakeloom.engine": (
        "lakeloom.core",
        "dagster",
        "lakeloom.assets",
        "lakeloom.resources",
        "lakeloom.io_managers",
        "lakeloom.sensors",
        "lakeloom.scale",
        "lakeloom.demos",
        "lakeloom.components",
    ),
    "lakeloom.storage": (
        "lakeloom.engine",
        "lakeloom.core",
        "dagster",
        "lakeloom.assets",
        "lakeloom.resources",
        "lakeloom.io_managers",
        "lakeloom.sensors",
        "lakeloom.scale",
        "lakeloom.demos",
    ),
    "lakeloom.sim": ("lakeloom",),
    # Modal containers get references and spec JSON, never Dagster objects.
    "lakeloom.modal_apps": (
        "dagster",
        "lakeloom.assets",
        "lakeloom.resources",
        "lakeloom.io_managers",
        "lakeloom.sensors",
        "lakeloom.scale",
        "lakeloom.demos",
    ),
    "lakeloom.resources": (
        "lakeloom.assets",
        "lakeloom.sensors",
        "lakeloom.scale",
        "lakeloom.demos",
    ),
}
# Exceptions to FORBIDDEN: (importer prefix, imported prefix). sim may import itself.
ALLOWED: tuple[tuple[str, str], ...] = (("lakeloom.sim", "lakeloom.sim"),)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, name: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(tree: ast.Module, name: str, is_pkg: bool, known: set[str]):
    """Yield (imported module, top_level) for every import in the tree."""

    def targets(node: ast.AST) -> list[str]:
        if isinstance(node, ast.Import):
            return [a.name for a in node.names]
        if isinstance(node, ast.ImportFrom):
            mod = _resolve(node, name, is_pkg)
            out = []
            for a in node.names:
                sub = f"{mod}.{a.name}"
                out.append(sub if sub in known else mod)
            return out
        return []

    def walk(body: list[ast.stmt], top: bool):
        for stmt in body:
            for t in targets(stmt):
                yield t, top
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                # class bodies run at import time; function bodies do not
                inner_top = top and isinstance(stmt, ast.ClassDef)
                yield from walk(stmt.body, inner_top)
            elif isinstance(stmt, (ast.If, ast.Try, ast.With, ast.For, ast.While)):
                for field in ("body", "orelse", "finalbody"):
                    yield from walk(getattr(stmt, field, []) or [], top)
                for h in getattr(stmt, "handlers", []) or []:
                    yield from walk(h.body, top)

    yield from walk(tree.body, True)


def graph(root: Path) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """(module-level edges, all edges incl. function-level) between lakeloom modules/externals."""
    pkg = root / "lakeloom"
    files = {module_name(p, root): p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts}
    known = set(files)
    top: dict[str, set[str]] = {m: set() for m in files}
    every: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for target, is_top in _imports(tree, mod, path.name == "__init__.py", known):
            # resolve to the longest known lakeloom module (a name inside a module -> the module)
            t = target
            while t.startswith("lakeloom") and t not in known and "." in t:
                t = t.rsplit(".", 1)[0]
            every[mod].add(t)
            if is_top and t in known and t != mod:
                top[mod].add(t)
    return top, every


def _parents(mod: str) -> list[str]:
    parts = mod.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def cycles(root: Path, lazy: bool = False) -> list[list[str]]:
    """Strongly connected components (size > 1) of the module-level import graph.

    Importing ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; a package importing its own
    submodule is a normal re-export and is not counted, so package-parent edges are left out.
    """
    top, every = graph(root)
    if lazy:  # function-level imports too: a circle that only import order keeps from failing
        top = {m: {t for t in ts if t in top} for m, ts in every.items()}
    edges = {
        m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")}
        for m, ts in top.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def violations(root: Path) -> list[tuple[str, str]]:
    """(importer, imported) pairs that import from a forbidden (higher) layer, any depth."""
    _, every = graph(root)
    bad = []
    for mod, targets in sorted(every.items()):
        for layer, banned in FORBIDDEN.items():
            if mod != layer and not mod.startswith(layer + "."):
                continue
            for t in sorted(targets):
                if any(mod.startswith(a) and t.startswith(b) for a, b in ALLOWED):
                    continue
                if any(t == b or t.startswith(b + ".") for b in banned):
                    bad.append((mod, t))
    return bad


def root_modules(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "lakeloom").glob("*.py"))


def main(argv: list[str]) -> int:
    root = Path(argv[1]).resolve() if len(argv) > 1 else Path(__file__).resolve().parents[1]
    cyc = cycles(root)
    bad = violations(root)
    lazy = [c for c in cycles(root, lazy=True) if c not in cyc]
    rootmods = root_modules(root)
    print(f"root modules ({len(rootmods)}): {' '.join(rootmods)}")
    print(f"cycles: {len(cyc)}")
    for c in cyc:
        print("  cycle:", " <-> ".join(c))
    print(f"cycles through function-level imports only (informational): {len(lazy)}")
    for c in lazy:
        print("  lazy cycle:", " <-> ".join(c))
    print(f"layer violations: {len(bad)}")
    for a, b in bad:
        print(f"  {a} -> {b}")
    return 1 if cyc or bad or len(rootmods) > 4 else 0


def test_no_cycles_and_no_import_from_a_higher_layer() -> None:
    root = Path(__file__).resolve().parents[1]
    assert cycles(root) == []
    assert cycles(root, lazy=True) == []
    assert violations(root) == []
    assert len(root_modules(root)) <= 4


if __name__ == "__main__":
    sys.exit(main(sys.argv))

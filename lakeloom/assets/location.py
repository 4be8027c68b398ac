"""Where a ``lakeloom`` command finds the user's ``Definitions``: Dagster's own code-location flags.

Every command that needs definitions takes ``-m/--module-name MODULE`` or ``-f/--python-file
FILE``, with ``-a/--attribute NAME`` and ``-d/--working-directory DIR``, exactly as ``dagster``
does, and with none of them reads the project's ``pyproject.toml`` in the working directory
(``[tool.dagster] module_name``, or a ``dg`` project's ``[tool.dg.project] root_module``). The
commands a report prints (``dagster asset materialize ...``) carry the same flags, so they work
for the user's project, not only the demo. A user's mistake (no such module or file, no
Definitions in it, an error while importing it) is a :class:`CodeLocationError`: one line, exit 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import shlex
import sys
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # dagster is imported only to load definitions: `lakeloom errors` stays quick
    import dagster as dg

HINT = "pass -m MODULE or -f FILE (as for dagster), or run where pyproject.toml has [tool.dagster]"


class CodeLocationError(Exception):
    """The code location cannot be found or loaded; the message is one line for the user."""


Kind = Literal["module", "file", "package", "autoload"]
_FLAG: dict[str, str] = {
    "module": "-m",
    "file": "-f",
    "package": "--package-name",
    "autoload": "--autoload-defs-module-name",
}


@dataclass(frozen=True)
class CodeLocation:
    """A Dagster code location as the ``dagster`` CLI names it (module or file, attribute, dir)."""

    kind: Kind
    target: str
    attribute: str | None = None
    working_directory: str | None = None
    origin: str = "flags"

    def flags(self) -> list[str]:
        """The ``dagster`` CLI arguments naming this location (``-f defs.py -a defs``...)."""
        out = [_FLAG[self.kind], self.target]
        if self.attribute:
            out += ["-a", self.attribute]
        if self.working_directory:
            out += ["-d", self.working_directory]
        return out

    def shell_flags(self) -> str:
        """:meth:`flags` quoted for a shell."""
        return shlex.join(self.flags())

    def describe(self) -> str:
        """``file defs.py`` / ``module my_pkg.definitions`` (and where it was found)."""
        what = f"{self.kind} {self.target}"
        if self.attribute:
            what += f" (attribute {self.attribute})"
        return what if self.origin == "flags" else f"{what}, from {self.origin}"

    def check(self) -> CodeLocation:
        """Raise :class:`CodeLocationError` when a named file or folder does not exist."""
        base = Path(self.working_directory or ".")
        if not base.is_dir():
            raise CodeLocationError(f"working directory {self.working_directory!r} does not exist")
        if self.kind == "file" and not (base / self.target).is_file():
            raise CodeLocationError(
                f"no such Python file: {self.target} (looked in {base.resolve()})"
            )
        return self

    def load(self) -> dg.Definitions:
        """Import the location and return its Definitions (raises :class:`CodeLocationError`)."""
        self.check()
        base = Path(self.working_directory or ".").resolve()
        if str(base) not in sys.path:
            sys.path.insert(0, str(base))
        if self.kind == "file":
            loaded = _import_file(base, self.target)
        else:
            loaded = _import_module(self.target)
        if self.kind == "autoload":
            from dagster.components import load_defs

            try:
                return load_defs(loaded)
            except Exception as exc:
                raise CodeLocationError(
                    f"loading {self.describe()} failed: {_one_line(exc)}"
                ) from None
        return _definitions_in(loaded, self.attribute, self.describe())


def add_location_arguments(parser: argparse.ArgumentParser) -> None:
    """Add Dagster's code-location flags (``-m``/``-f``/``-a``/``-d``) to ``parser``."""
    group = parser.add_argument_group("code location (as for dagster; default: pyproject.toml)")
    which = group.add_mutually_exclusive_group()
    which.add_argument(
        "-m", "--module-name", "--module", dest="module_name", metavar="MODULE",
        help="module holding the Definitions (pkg.mod; pkg.mod:attr also accepted)",
    )  # fmt: skip
    which.add_argument(
        "-f", "--python-file", dest="python_file", metavar="FILE",
        help="Python file holding the Definitions",
    )  # fmt: skip
    which.add_argument("--package-name", dest="package_name", metavar="PACKAGE", help="package")
    which.add_argument(
        "--autoload-defs-module-name", dest="autoload_defs_module_name", metavar="MODULE",
        help="module to search recursively for definitions (a dg project's defs folder)",
    )  # fmt: skip
    group.add_argument(
        "-a", "--attribute", dest="attribute", metavar="NAME",
        help="the Definitions attribute (needed when a module holds several)",
    )  # fmt: skip
    group.add_argument(
        "-d", "--working-directory", dest="working_directory", metavar="DIR",
        help="folder to import from (default: the current folder)",
    )  # fmt: skip


def location_from_args(args: argparse.Namespace, *, cwd: Path | None = None) -> CodeLocation:
    """The location the flags name, else the project's pyproject.toml (raises if neither)."""
    attribute = getattr(args, "attribute", None)
    workdir = getattr(args, "working_directory", None)
    named = {
        kind: getattr(args, dest, None)
        for kind, dest in (
            ("module", "module_name"),
            ("file", "python_file"),
            ("package", "package_name"),
            ("autoload", "autoload_defs_module_name"),
        )
    }
    for kind, target in named.items():
        if not target:
            continue
        if kind == "module" and ":" in target:  # lakeloom's older pkg.mod:attr form
            target, _, attr = target.partition(":")
            attribute = attribute or attr
        return CodeLocation(kind, target, attribute=attribute, working_directory=workdir)  # type: ignore[arg-type]
    found = location_from_pyproject(Path(workdir) if workdir else (cwd or Path.cwd()))
    if found is None:
        raise CodeLocationError(f"no code location given: {HINT}")
    return replace(
        found,
        attribute=attribute or found.attribute,
        working_directory=workdir or found.working_directory,
    )


def location_of_run(run_id: str) -> CodeLocation | None:
    """The code location a Dagster run was launched from, as its instance recorded it.

    Only with ``DAGSTER_HOME`` set (no instance is created elsewhere); ``None`` when the run, its
    code origin or the instance is not there (an in-process ``dg.materialize`` records none).
    """
    import os

    if not os.environ.get("DAGSTER_HOME"):
        return None
    try:
        import dagster as dg

        with dg.DagsterInstance.get() as instance:
            run = instance.get_run_by_id(run_id)
        pointer = run.job_code_origin.repository_origin.code_pointer  # type: ignore[union-attr]
    except Exception:  # no instance, no such run, no code origin: the caller falls back
        return None
    kinds: dict[str, tuple[Kind, str]] = {
        "FileCodePointer": ("file", "python_file"),
        "ModuleCodePointer": ("module", "module"),
        "PackageCodePointer": ("package", "module"),
        "AutoloadDefsModuleCodePointer": ("autoload", "module"),
    }
    found = kinds.get(type(pointer).__name__)
    if found is None:
        return None
    kind, field = found
    return CodeLocation(
        kind,
        getattr(pointer, field),
        attribute=getattr(pointer, "fn_name", None) or getattr(pointer, "attribute", None),
        working_directory=getattr(pointer, "working_directory", None),
        origin=f"run {run_id}",
    )


def location_from_pyproject(folder: Path) -> CodeLocation | None:
    """``[tool.dagster]`` or ``[tool.dg]`` settings of ``folder/pyproject.toml``, if any."""
    path = folder / "pyproject.toml"
    if not path.is_file():
        return None
    try:
        tool = tomllib.loads(path.read_text()).get("tool", {})
    except tomllib.TOMLDecodeError as exc:
        raise CodeLocationError(f"{path}: not valid TOML ({exc})") from None
    dagster = tool.get("dagster", {})
    if dagster.get("module_name"):
        return CodeLocation(
            "module", dagster["module_name"], origin="pyproject.toml [tool.dagster]"
        )
    project = tool.get("dg", {}).get("project", {})
    root = project.get("root_module")
    if not root:
        return None
    origin = "pyproject.toml [tool.dg]"
    if project.get("autoload_defs"):
        return CodeLocation("autoload", project.get("defs_module") or f"{root}.defs", origin=origin)
    target = project.get("code_location_target_module") or f"{root}.definitions"
    return CodeLocation("module", target, origin=origin)


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
            raise CodeLocationError(
                f"no module named {name!r} (from {Path.cwd()}; use -d DIR or -f FILE)"
            ) from None
        raise CodeLocationError(f"importing module {name!r} failed: {_one_line(exc)}") from None
    except Exception as exc:  # the user's code raised while being imported
        raise CodeLocationError(f"importing module {name!r} failed: {_one_line(exc)}") from None


def _import_file(base: Path, file: str) -> Any:
    path = Path(file) if Path(file).is_absolute() else base / file
    if not path.is_file():
        raise CodeLocationError(f"no such Python file: {file} (looked in {base})")
    if str(path.parent.resolve()) not in sys.path:  # sibling modules import, as under dagster
        sys.path.insert(0, str(path.parent.resolve()))
    name = path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise CodeLocationError(f"{file}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(name, None)
        raise CodeLocationError(f"importing {file} failed: {_one_line(exc)}") from None
    return module


def _definitions_in(module: Any, attribute: str | None, where: str) -> dg.Definitions:
    """The module's one Definitions (or ``attribute``); a ``@dg.definitions`` function is called."""
    import dagster as dg

    if attribute:
        if not hasattr(module, attribute):
            raise CodeLocationError(f"{where} has no attribute {attribute!r}")
        value = _resolve(getattr(module, attribute))
        if not isinstance(value, dg.Definitions):
            raise CodeLocationError(f"{where}: {attribute!r} is not a dagster Definitions")
        return value
    found = {n: v for n, v in vars(module).items() if _is_definitions(v)}
    if len(found) != 1:
        names = ", ".join(sorted(found)) or "none"
        raise CodeLocationError(
            f"{where} holds {len(found)} Definitions objects ({names}); "
            + ("pass -a NAME" if found else "define defs = dg.Definitions(...)")
        )
    return _resolve(next(iter(found.values())))


def _is_definitions(value: Any) -> bool:
    import dagster as dg

    return isinstance(value, dg.Definitions) or type(value).__name__ == "LazyDefinitions"


def _resolve(value: Any) -> Any:
    """Call a ``@dg.definitions`` function (LazyDefinitions) or a plain factory."""
    import dagster as dg

    if isinstance(value, dg.Definitions):
        return value
    try:
        if type(value).__name__ == "LazyDefinitions":
            return value()
        return value() if callable(value) else value
    except Exception as exc:
        raise CodeLocationError(f"building the Definitions failed: {_one_line(exc)}") from None


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__

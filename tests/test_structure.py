"""The structure check: no import cycle among the project's modules, and packages import downwards only.

Imports are read with `ast` from every module, those inside functions included (a lazy import still ties two
modules together). Layers, bottom up: model; db on model; jobs on db; worker on jobs and db; train on model alone.
webui/ and demo.py sit on top; settings.py and cli.py may be imported by any entry point.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.helpers import ROOT

PACKAGES = ("model", "db", "jobs", "worker", "train", "webui")
TOP_MODULES = ("settings", "cli", "demo")
SHARED = {"settings", "cli"}  # top-level modules any layer's entry points may import
ALLOWED = {
    "model": set(),
    "db": {"model"},
    "jobs": {"db", "model"},
    "worker": {"jobs", "db", "model"},
    "train": {"model"},
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    found = {name: ROOT / f"{name}.py" for name in TOP_MODULES}
    for package in PACKAGES:
        found |= {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module `name` names, or its nearest enclosing project module; None outside the project."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules `module` imports anywhere in its body (functions included)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names = [f"{base}.{alias.name}" for alias in node.names]  # `from pkg import mod` names pkg.mod
        else:
            continue
        found |= {m for m in (_resolve(n, modules) for n in names) if m and m != module}
    return found


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_the_checks_see_a_cycle_and_imports_inside_functions():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    modules = project_modules()
    # worker.tasks imports the pipeline inside the task only: the parser must still see it.
    assert "worker.pipeline" in imports_of("worker.tasks", modules["worker.tasks"], modules)


def test_no_import_cycle():
    assert find_cycle(import_graph()) is None


def test_packages_import_downwards():
    wrong = []
    for module, imported in import_graph().items():
        layer = module.split(".")[0]
        if layer not in ALLOWED:
            continue
        for target in imported:
            other = target.split(".")[0]
            if other != layer and other not in SHARED and other not in ALLOWED[layer]:
                wrong.append(f"{module} -> {target}")
    assert wrong == [], "imports against the layers (model < db < jobs < worker; train on model):\n" + "\n".join(wrong)


def test_settings_and_cli_stay_small():
    """What any layer may import must not pull in a layer above model: cli imports nothing of the project."""
    graph = import_graph()
    assert graph["cli"] == set()
    assert {m.split(".")[0] for m in graph["settings"]} <= {"model"}


def test_modules_stay_small_and_the_readme_is_a_front_page():
    """A module a newcomer reads in one sitting (300 lines at most); the README a front page (120 lines, 10 KB)."""
    files = [*project_modules().values(), *(ROOT / "benchmarks").glob("*.py")]
    long = {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > 300}
    assert long == {}
    readme = (ROOT / "README.md").read_bytes()
    assert len(readme.splitlines()) <= 120 and len(readme) <= 10 * 1024


def test_tables_are_defined_only_in_db():
    """One definition of each table: `db.models`, read by everything else (Alembic migrations excepted)."""
    defining = [str(p.relative_to(ROOT)) for p in project_modules().values()
                if re.search(r"^\s*__tablename__ =|\bTable\(\s*\"", p.read_text(), re.M)
                and "migrations" not in p.parts]
    assert defining == ["db/models.py"]

"""The package's import graph: arrows point down the floors and there is no cycle.

Every ``import`` / ``from ... import`` statement in ``src/twinimpact`` is read with ``ast``,
wherever it stands (module level, inside a function -- a "lazy" import -- or a method);
only imports under ``if TYPE_CHECKING:`` are skipped (they never run). Importing
``a.b.c`` also runs ``a/__init__.py`` and ``a/b/__init__.py``, so those edges count too.

Floors, bottom to top (a module may import its own floor and the floors below it, with the
exceptions listed in ``ALLOWED``)::

    base        errors, _version, _paths, _io, provenance, results (the results protocol)
    core        core/*           fixed-effect solvers, vcov, validation, two-stage kernel
    estimators  estimators/*, inference/*, diagnostics/*
    data        etl/*, panel
    report      report/*         (depends on results; synthetic-control figures read
                                  SyntheticDIDResult)
    studies     studies/*, cli, the package __init__
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "twinimpact"

FLOORS = ("base", "core", "estimators", "data", "report", "studies")


def floor_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1:
        return "studies"                       # twinimpact/__init__.py re-exports everything
    head = parts[1]
    if head in {"errors", "_version", "_paths", "_io", "provenance", "results"}:
        return "base"
    if head == "core":
        return "core"
    if head in {"estimators", "inference", "diagnostics"}:
        return "estimators"
    if head in {"etl", "panel"}:
        return "data"
    if head == "report":
        return "report"
    if head in {"studies", "cli"}:
        return "studies"
    raise AssertionError(f"module {module} is on no floor: add it to floor_of")


#: floor -> the floors it must not import (``data`` and ``estimators`` are side by side:
#: neither imports the other; ``report`` reads results, not the data layer)
FORBIDDEN: dict[str, set[str]] = {
    "base": {"core", "estimators", "data", "report", "studies"},
    "core": {"estimators", "data", "report", "studies"},
    "estimators": {"data", "report", "studies"},
    "data": {"core", "estimators", "report", "studies"},
    "report": {"data", "studies"},
    "studies": set(),
}
#: the only edges from ``report`` into ``estimators``: the synthetic-control figures need the
#: SDID result type (its weights and trajectories), not just the tidy frame
REPORT_MAY_IMPORT = {"twinimpact.estimators.synthetic_did",
                     # the pre-trend power figure solves for the slopes it draws (Roth 2022)
                     "twinimpact.inference.pretrend_power"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
            if name == "TYPE_CHECKING":
                for sub in node.body:
                    skip.update(id(n) for n in ast.walk(sub))
    return skip


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Internal modules ``module`` imports (lazy ones included), with their parent packages."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = _type_checking_nodes(tree)
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    targets: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            targets.add(target)
            for a in node.names:                   # ``from pkg import submodule``
                if f"{target}.{a.name}" in modules:
                    targets.add(f"{target}.{a.name}")
    out: set[str] = set()
    for t in targets:
        if not t.startswith("twinimpact"):
            continue
        parts = t.split(".")
        for i in range(1, len(parts) + 1):         # importing a.b.c runs a and a.b
            cand = ".".join(parts[:i])
            # the module's own parent packages are already being imported: not an edge
            if cand in modules and cand != module and not module.startswith(cand + "."):
                out.add(cand)
    return out


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def test_every_module_is_on_a_floor(graph):
    for m in graph:
        assert floor_of(m) in FLOORS


def test_arrows_point_down(graph):
    bad = []
    for m, deps in graph.items():
        fm = floor_of(m)
        for d in deps:
            fd = floor_of(d)
            if fd not in FORBIDDEN[fm]:
                continue
            if fm == "report" and d in REPORT_MAY_IMPORT:
                continue
            if fm == "estimators" and fd == "estimators":
                continue
            bad.append(f"{m} ({fm}) imports {d} ({fd})")
    assert not bad, "imports that point up or sideways:\n" + "\n".join(sorted(bad))


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    white, grey, black = 0, 1, 2
    color = dict.fromkeys(graph, white)
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        color[m] = grey
        stack.append(m)
        for d in sorted(graph[m]):
            if color[d] == grey:
                return [*stack[stack.index(d):], d]
            if color[d] == white:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        color[m] = black
        return None

    for m in sorted(graph):
        if color[m] == white:
            found = visit(m)
            if found:
                return found
    return None


def test_no_import_cycles_lazy_ones_included(graph):
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    g = {"twinimpact.a": {"twinimpact.b"}, "twinimpact.b": {"twinimpact.c"},
         "twinimpact.c": {"twinimpact.a"}}
    assert _find_cycle(g) == ["twinimpact.a", "twinimpact.b", "twinimpact.c", "twinimpact.a"]
    assert _find_cycle({"twinimpact.a": {"twinimpact.b"}, "twinimpact.b": set()}) is None


def test_lazy_imports_are_seen():
    modules = all_modules()
    deps = imports_of("twinimpact.studies.casestudy", modules["twinimpact.studies.casestudy"],
                      modules)
    # CaseStudyResult.plot imports the report lazily, inside the method
    assert "twinimpact.report.synthetic" in deps


def test_matplotlib_only_in_report():
    offenders = []
    for m, p in all_modules().items():
        if floor_of(m) == "report":
            continue
        tree = ast.parse(p.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(n.split(".")[0] == "matplotlib" for n in names):
                offenders.append(m)
    assert not offenders, f"matplotlib imported outside report/: {sorted(set(offenders))}"

"""Import direction follows the data flow: no cycles among the project's modules, and reports
read result files without the engine, the catalog or any pipeline code."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("datagen", "pipelines", "bench", "reports")


def project_modules() -> dict[str, Path]:
    """Every module of the project packages by dotted name (a package by its ``__init__``)."""
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules[".".join(parts)] = path
    return modules


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node except those under ``if TYPE_CHECKING:``, which never run."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        out.append(node)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))
    return out


def imports_of(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules ``name`` imports, at module level or inside functions."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            # ``from bench import sweep`` imports the module bench.sweep; ``from bench.x import f`` imports bench.x.
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in modules and t != name}
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that ends where it starts, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    modules = project_modules()
    return {name: imports_of(name, path, modules) for name, path in modules.items()}


def test_the_cycle_finder_finds_a_planted_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    # bench.cli imports the pipelines only inside the commands that need them.
    assert "pipelines.catalog" in graph["bench.cli"]
    assert "bench.sweep" in graph["bench.cli"] and "bench.contract" in graph["bench.sweep"]


def test_no_import_cycle_among_project_modules() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_reports_import_no_pipeline_module() -> None:
    graph = import_graph()
    # bench.results and bench.equality load the engine: reports must not reach pipelines through them either.
    banned = ("pipelines", "bench.results", "bench.equality")
    offending = {
        (name, target)
        for name, targets in graph.items()
        if name.startswith("reports")
        for target in targets
        if target.startswith(banned)
    }
    assert offending == set()


def test_report_commands_load_neither_duckdb_nor_pyiceberg(tmp_path: Path) -> None:
    """Rendering and comparing result files, as ``ipsbench report`` and ``compare`` do, in a fresh interpreter."""
    from tests.test_reports import LATE, RATIOS, STAGES, _run_dir, _sweep_rows, _walls, _write_sweep

    run = _run_dir(tmp_path / "run", _walls({s: [1.0] for s in STAGES}))
    sweep = tmp_path / "sweep"
    _write_sweep(sweep, _sweep_rows(LATE, RATIOS), {"late_fraction": LATE, "lookback_days": [7]})
    script = f"""
import json, sys
import reports.render, reports.sweep, reports.compare
from bench.cli import main
run, sweep = {str(run)!r}, {str(sweep)!r}
codes = [main(["report", run]), main(["report", sweep]), main(["compare", run, run])]
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("duckdb", "pyiceberg", "pipelines"))
print(json.dumps({{"codes": codes, "loaded": loaded}}))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result == {"codes": [0, 0, 0], "loaded": []}

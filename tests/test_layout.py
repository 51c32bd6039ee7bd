"""The package's layout (docs/architecture.md#layout): a short top level, and no import cycles
between the modules of the core subpackages — even through imports made inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pgjobs

ROOT = Path(pgjobs.__file__).parent
TOP_LEVEL = {
    "__init__", "__main__", "clock", "errors", "events", "hooks", "pytest_plugin", "runtime",
    "serialization", "testing",
}  # fmt: skip
ACYCLIC = ("jobs", "enqueue", "config", "operations", "cli", "processes", "store", "db")


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        name = ".".join(("pgjobs", *path.relative_to(ROOT).with_suffix("").parts))
        found[name.removesuffix(".__init__")] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The pgjobs modules ``path`` imports at run time (TYPE_CHECKING blocks left out)."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING"
        for inner in ast.walk(node)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only or not isinstance(node, ast.ImportFrom) or node.level:
            continue
        if node.module and node.module.startswith("pgjobs"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in modules else node.module)
    return {name for name in found if name in modules}


def test_the_top_level_holds_only_the_core() -> None:
    assert {p.stem for p in ROOT.glob("*.py")} == TOP_LEVEL


def test_no_import_cycles_between_core_modules() -> None:
    modules = _modules()
    core = {n: p for n, p in modules.items() if n.split(".")[1:2] and n.split(".")[1] in ACYCLIC}
    graph = {name: _imports(path, modules) & set(core) for name, path in core.items()}
    cycles = []
    for start in graph:  # a path from a module's imports back to itself
        seen, stack = set(), [(start, [start])]
        while stack:
            node, trail = stack.pop()
            for nxt in graph[node] - {node}:  # cli.demo imports itself by name, as a script
                if nxt == start:
                    cycles.append(" -> ".join([*trail, start]))
                elif nxt not in seen:
                    seen.add(nxt)
                    stack.append((nxt, [*trail, nxt]))
    assert cycles == []


def test_running_jobs_imports_neither_sqlalchemy_nor_alembic_nor_croniter() -> None:
    """A supervisor, worker or dispatcher never needs them (~40 MiB of RSS): migrations, the
    schema's metadata and schedules import them when they are used."""
    import subprocess
    import sys

    code = (
        "import sys, pgjobs, pgjobs.cli.main, pgjobs.processes.child,"
        " pgjobs.processes.supervisor, pgjobs.processes.worker, pgjobs.processes.dispatcher;"
        " print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'sqlalchemy', 'alembic', 'croniter', 'dateutil', 'jinja2', 'starlette'}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_table_names_and_revisions_written_out_match_the_schema_and_the_migrations() -> None:
    from pgjobs.db import migrate, names, revision, schema

    assert set(names.TABLES.values()) == {t.name for t in schema.metadata.sorted_tables}, (
        "pgjobs.db.names.TABLES must name every table of pgjobs.db.schema"
    )
    assert migrate.head_revisions() == revision.HEADS, "update pgjobs.db.revision.HEADS"
    assert migrate._all_revisions() == revision.REVISIONS, "update pgjobs.db.revision.REVISIONS"

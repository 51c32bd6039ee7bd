"""The package's layout (docs/architecture.md#layout): a short top level, and no import cycles
between the modules of the subpackages — even through imports made inside functions.

Imports under ``if TYPE_CHECKING:`` are left out, on purpose: they never run, so they cannot make
a module see another half-initialised or make import order matter, and every module that has
them postpones its annotations (``from __future__ import annotations``, checked below), so no
annotation evaluates those names at run time either.  They only let mypy check a module against
the type it is handed — typically :class:`pgjobs.Job`, which ``jobs.limits``, ``jobs.rules``,
``jobs.control``, ``enqueue.core``, ``operations.*`` and ``observability.*`` take as a parameter
while ``jobs.base`` uses them.  Counting them would make a cycle of every such module and the
class it serves; replacing ``Job`` by a structural copy (a Protocol) in each would duplicate its
attributes in a dozen places, for no run-time difference.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pgjobs

ROOT = Path(pgjobs.__file__).parent
TOP_LEVEL = {
    "__init__", "__main__", "clock", "errors", "events", "hooks", "pytest_plugin", "runtime",
    "serialization", "testing",
}  # fmt: skip
ACYCLIC = (
    "jobs", "enqueue", "config", "operations", "cli", "processes", "store", "db", "web",
    "observability", "contrib", "workflows",
)  # fmt: skip


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


def test_no_import_cycles_between_modules() -> None:
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


def test_typing_only_imports_are_only_for_annotations() -> None:
    """Why typing-only imports may be left out of the cycle check (see the module docstring):
    a module that has them postpones the evaluation of its annotations."""
    lazy = "from __future__ import annotations"
    eager = [
        str(path.relative_to(ROOT))
        for path in ROOT.rglob("*.py")
        if "TYPE_CHECKING:" in path.read_text() and lazy not in path.read_text()
    ]
    assert eager == []


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


def test_the_metrics_gauges_and_the_job_lists_need_no_dashboard_packages() -> None:
    """`pgjobs[metrics]` and `pgjobs jobs list` without `pgjobs[web]`: the queries they share
    with the dashboard live outside pgjobs.web, which they never import."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('jinja2', 'starlette', 'python_multipart'):\n"
        "            raise ImportError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import pgjobs.operations.counts, pgjobs.operations.lists, pgjobs.cli.waiting\n"
        "assert 'pgjobs.web' not in sys.modules, sorted(m for m in sys.modules if 'web' in m)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr

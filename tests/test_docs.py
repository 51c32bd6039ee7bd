"""The documentation stays true to the code.

- Every Python block of README.md and of the docs pages runs, in order, as one session per file
  (a block right after ``<!-- docs-test: skip ... -->`` is left out); docs/testing.md's blocks
  are the files of a small project, whose tests run with pytest.
- Every ``pgjobs ...`` command in a shell or ini block parses with the real ``pgjobs`` parser.
- Every relative link in the documentation points at a file that exists.
- docs/architecture.md names every table, index and constraint of the schema and every statement
  of the store modules it documents, and every statement it names exists.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import types
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pgjobs import events, hooks, runtime, serialization
from pgjobs.cli import main as cli
from pgjobs.db.database import Database
from pgjobs.db.schema import metadata
from pgjobs.jobs import base as jobs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MARKDOWN = sorted([ROOT / "README.md", ROOT / "CHANGELOG.md", *DOCS.glob("*.md")])
SKIP = "<!-- docs-test: skip"
SHELLS = {"bash", "sh", "shell", "console", "ini"}
# Store modules whose every statement docs/architecture.md must name.  A module not listed here
# (work in progress) must at least be mentioned by its path.
DOCUMENTED_STORES = (
    "blocked", "claimed", "failed", "finished", "jobs", "pauses", "processes", "rates", "ready",
    "scheduled", "semaphores",
)  # fmt: skip


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    skip: bool


def blocks(path: Path) -> list[Block]:
    found: list[Block] = []
    lines = path.read_text().splitlines()
    skip_next = False
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith(SKIP):
            skip_next = True
        elif stripped.startswith("```"):
            lang, start, body = stripped[3:].strip(), i + 1, []
            i += 1
            while i < len(lines) and not lines[i].strip().startswith("```"):
                body.append(lines[i])
                i += 1
            found.append(Block(path, start, lang, "\n".join(body) + "\n", skip_next))
            skip_next = False
        elif stripped:
            skip_next = False
        i += 1
    return found


def run_python_blocks(path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Execute the file's Python blocks in one namespace, as the module ``myapp.jobs``."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = types.ModuleType("myapp.jobs")  # importable while it runs, like a real module
    monkeypatch.setitem(sys.modules, module.__name__, module)
    # The examples' job names and registered types are forgotten afterwards.
    monkeypatch.setattr(jobs, "_registry", dict(jobs._registry))
    monkeypatch.setattr(serialization, "_BY_CLASS", dict(serialization._BY_CLASS))
    monkeypatch.setattr(serialization, "_BY_NAME", dict(serialization._BY_NAME))
    monkeypatch.setattr(serialization, "_RECORDS", dict(serialization._RECORDS))
    monkeypatch.setattr(serialization, "_RECORDS_BY_CLASS", {})
    monkeypatch.setattr(hooks, "job_wrappers", hooks.job_wrappers)
    monkeypatch.setattr(
        hooks, "_hooks", defaultdict(list, {k: list(v) for k, v in hooks._hooks.items()})
    )
    subscribed = {name: list(subscribers) for name, subscribers in events._by_name.items()}
    thread_error_handlers = list(events._thread_error_handlers)
    try:
        _run_blocks(path, module)
    finally:  # the examples' subscribers are forgotten too
        with events._lock:
            events._by_name.clear()
            events._by_name.update(subscribed)
            events._thread_error_handlers[:] = thread_error_handlers
            events._rebuild()


def _run_blocks(path: Path, module: types.ModuleType) -> None:
    ran = 0
    for block in blocks(path):
        if block.lang != "python" or block.skip:
            continue
        where = f"{path.relative_to(ROOT)}, block at line {block.line}"
        exec(compile(block.code, where, "exec", dont_inherit=True), module.__dict__)
        ran += 1
    for value in list(vars(module).values()):
        if isinstance(value, Engine):  # an example's engine keeps pooled connections open
            value.dispose()
    assert ran, f"{path.name} has no Python block to run"


@pytest.fixture
def keep_default_database(db: Database) -> Iterator[Database]:
    """Restore pgjobs' default database if an example calls ``pgjobs.configure``."""
    previous = runtime.use(db)
    try:
        yield db
    finally:
        replaced = runtime.use(previous)
        if replaced is not None and replaced is not db and replaced is not previous:
            replaced.close()


# What a page has its reader set before its Python blocks (the `export` of its shell block).
PAGE_ENV = {
    "docs/dashboard.md": {"PGJOBS_WEB_USERNAME": "admin", "PGJOBS_WEB_PASSWORD": "a long secret"},
}


@pytest.mark.committed
@pytest.mark.parametrize(
    "name",
    [
        "README.md",
        *sorted(
            str(path.relative_to(ROOT))
            for path in DOCS.glob("*.md")
            # their own tests: migrations.md needs an empty database, testing.md's blocks are the
            # files of a project
            if path.name not in ("migrations.md", "testing.md")
            and any(b.lang == "python" and not b.skip for b in blocks(path))
        ),
    ],
)
def test_python_examples_run(
    name: str, keep_default_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {"PGJOBS_DATABASE_URL": keep_default_database.url, **PAGE_ENV.get(name, {})}
    run_python_blocks(ROOT / name, env, monkeypatch)


def test_migration_examples_run(
    make_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run_python_blocks(DOCS / "migrations.md", {"PGJOBS_DATABASE_URL": make_database()}, monkeypatch)


_FILE = re.compile(r"# ([\w./-]+\.py)\n")


def project_files(path: Path) -> dict[str, str]:
    """The page's Python blocks as the files their first line names (``# shop/jobs.py``); the
    blocks naming one file are that file's parts, in order."""
    files: dict[str, str] = {}
    for block in blocks(path):
        if block.lang != "python" or block.skip:
            continue
        named = _FILE.match(block.code)
        assert named, f"{path.name}, block at line {block.line}: no `# path/to/file.py` first line"
        files[named.group(1)] = files.get(named.group(1), "") + block.code
    return files


def test_testing_examples_pass_under_pytest(
    tmp_path: Path, make_database: Callable[[], str]
) -> None:
    """docs/testing.md's project, written out as a reader would, and its tests run with pytest
    (those against a real database on a new one, which its conftest.py migrates)."""
    files = project_files(DOCS / "testing.md")
    assert sorted(files) == [
        "conftest.py", "shop/jobs.py", "shop/orders.py", "tests/test_orders.py",
        "tests/test_orders_db.py",
    ]  # fmt: skip
    for name, code in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")}
    env.pop("DATABASE_URL", None)  # the reader's tests name their database themselves
    env["TEST_DATABASE_URL"] = make_database()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:django"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"\b5 passed\b", done.stdout), done.stdout


# -- commands ----------------------------------------------------------------------------------

_COMMAND = re.compile(r"(?:^|[\s/=])pgjobs(\s.*)?$")
_COMMENT = re.compile(r"(^|\s)#.*$")
_END = {"|", "||", "&&", ";", ">", ">>", "<", "2>", "&"}


def commands() -> list[tuple[str, list[str]]]:
    """``(where, argv)`` for every ``pgjobs COMMAND ...`` in a shell or ini block."""
    found: list[tuple[str, list[str]]] = []
    for path in MARKDOWN:
        for block in blocks(path):
            if block.lang not in SHELLS:
                continue
            for offset, line in enumerate(block.code.splitlines(), start=1):
                match = _COMMAND.search(_COMMENT.sub("", line))
                if not match or not match.group(1):
                    continue
                words = shlex.split(match.group(1))
                argv = []
                for word in words:
                    if word in _END:
                        break
                    argv.append(word)
                if argv and not argv[0].startswith("-"):  # `journalctl -u pgjobs -f` is not ours
                    found.append((f"{path.relative_to(ROOT)}:{block.line + offset}", argv))
    return found


def test_documented_commands_exist() -> None:
    parser = cli.build_parser()
    found = commands()
    assert len(found) > 10, found
    for where, argv in found:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{where}: `pgjobs {shlex.join(argv)}` is not a valid pgjobs command")


# -- links -------------------------------------------------------------------------------------

_LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_relative_links_resolve() -> None:
    for path in MARKDOWN:
        for target in _LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            file = target.split("#", 1)[0]
            assert (path.parent / file).exists(), f"{path.relative_to(ROOT)}: broken link {target}"


# -- architecture ------------------------------------------------------------------------------


def architecture() -> str:
    return (DOCS / "architecture.md").read_text()


def test_architecture_names_every_table_index_and_constraint() -> None:
    text = architecture()
    missing = []
    for table in metadata.sorted_tables:
        names = [table.name] + [str(index.name) for index in table.indexes]
        names += [str(c.name) for c in table.constraints]
        missing += [name for name in names if f"`{name}`" not in text]
    assert not missing, "docs/architecture.md does not explain: " + ", ".join(missing)


def _statements(module: str) -> dict[str, str]:
    store = importlib.import_module(f"pgjobs.store.{module}")
    return {
        name: value
        for name, value in vars(store).items()
        if name.isupper() and not name.startswith("_") and isinstance(value, str)
    }


def test_architecture_names_every_store_statement() -> None:
    text = architecture()
    missing = [
        f"{module}.{name}"
        for module in DOCUMENTED_STORES
        for name in _statements(module)
        if f"`{module}.{name}`" not in text
    ]
    assert not missing, "docs/architecture.md does not mention: " + ", ".join(missing)
    for path in sorted((ROOT / "src/pgjobs/store").glob("*.py")):
        if path.stem not in (*DOCUMENTED_STORES, "__init__"):
            assert f"store/{path.name}" in text, f"docs/architecture.md never mentions {path.name}"


def test_statements_named_in_the_architecture_exist() -> None:
    modules = "|".join(p.stem for p in (ROOT / "src/pgjobs/store").glob("*.py"))
    named = set(re.findall(rf"`({modules})\.([A-Z][A-Z_]*)`", architecture()))
    assert len(named) > 20
    for module, name in sorted(named):
        assert name in _statements(module), f"docs/architecture.md names {module}.{name}"

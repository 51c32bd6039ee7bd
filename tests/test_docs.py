"""The documentation stays true to the code.

- Every Python block of README.md and of the docs pages runs, in order, as one session per file
  (a block right after ``<!-- docs-test: skip (reason) -->`` is left out; a page whose blocks
  are all left out fails, unless :data:`ALL_SKIPPED` says why); docs/testing.md's blocks are
  the files of a small project, whose tests run with pytest.  What a page's examples take from
  the application around them (its models, an engine) is set up by :data:`PAGE_SETUP`.
- README's transactional enqueue runs as a newcomer runs it: without ``PGJOBS_DATABASE_URL``,
  on the embedded server.
- Every ``pgjobs ...`` command in a shell or ini block parses with the real ``pgjobs`` parser.
- Every relative link in the documentation points at a file that exists.
- docs/architecture.md names every table, index and constraint of the schema and every statement
  of the store modules it documents, and every statement it names exists.
"""

from __future__ import annotations

import importlib
import itertools
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

import psycopg
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
    "batches", "blocked", "claimed", "failed", "finished", "jobs", "pauses", "processes", "rates",
    "ready", "scheduled", "semaphores",
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
    from pgjobs.contrib import sqlalchemy as records  # its record kind stays registered

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    module = types.ModuleType("myapp.jobs")  # importable while it runs, like a real module
    monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(records, "_factory", records._factory)  # an example's use_session
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
    name = str(path.relative_to(ROOT))
    setup, check, teardown = PAGE_SETUP.get(name, ("", "", ""))

    def run(code: str, where: str) -> None:
        exec(compile(code, where, "exec", dont_inherit=True), module.__dict__)

    try:
        run(setup, f"{name}: its PAGE_SETUP")
        for block in blocks(path):
            if block.lang != "python" or block.skip:
                continue
            run(block.code, f"{name}, block at line {block.line}")
            ran += 1
        run(check, f"{name}: its PAGE_SETUP check")
    finally:
        run(teardown, f"{name}: its PAGE_SETUP tear-down")
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

# What a page's examples take from the application around them, as (set-up, check, tear-down)
# code run in the page's namespace before its blocks, after them, and in any case at the end.
PAGE_SETUP = {
    # The models (Order, User), their tables on the test database and an engine on it, an order
    # to enqueue and two saved ones (`more`), a job and the checks the routes name, and a Django
    # project's BASE_DIR (this repository: its config/queue.yml exists).  The check: the
    # SQLAlchemy example enqueued its three jobs, and the Django example's PGJOBS is valid.
    "docs/integrations.md": (
        f"""
import os
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

import pgjobs
from pgjobs.db.urls import sqlalchemy_url


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "docs_users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str]


class Order(Base):
    __tablename__ = "docs_orders"
    id: Mapped[int] = mapped_column(primary_key=True)
    confirmed: Mapped[bool] = mapped_column(default=False)


class SendWelcome(pgjobs.Job):
    def perform(self, user: User) -> None: ...


async def require_admin() -> None: ...


def is_admin() -> bool:
    return True


engine = _tables = create_engine(sqlalchemy_url(os.environ["PGJOBS_DATABASE_URL"]))
Base.metadata.create_all(_tables)
with Session(_tables, expire_on_commit=False) as saving:
    more = [Order(), Order()]
    saving.add_all(more)
    saving.commit()
order = Order()
BASE_DIR = Path({str(ROOT)!r})
""",
        """
from sqlalchemy import text

from pgjobs.contrib.django import conf

with _tables.connect() as connection:  # (the FastAPI example has its own `engine`)
    enqueued = connection.execute(
        text("SELECT count(*) FROM pgjobs_jobs WHERE class_name = 'myapp.jobs:SendConfirmation'")
    ).scalar()
assert enqueued == 3, enqueued
assert conf.validate(PGJOBS, {"default": {}}).config == str(BASE_DIR / "config" / "queue.yml")
""",
        """
if "_tables" in globals():
    Base.metadata.drop_all(_tables)
""",
    ),
}

# Pages whose Python blocks are all left out (`docs-test: skip`), and why none can run here.
# Any other such page fails test_python_examples_run: each page must run something.
ALL_SKIPPED: dict[str, str] = {}
# Pages whose blocks run in tests of their own.
OWN_TESTS = {
    "docs/migrations.md": "test_migration_examples_run: it needs an empty database",
    "docs/testing.md": "test_testing_examples_pass_under_pytest: its blocks are a project's files",
}


def _pages_with_python() -> list[str]:
    return sorted(
        str(path.relative_to(ROOT))
        for path in [ROOT / "README.md", *DOCS.glob("*.md")]
        if any(b.lang == "python" for b in blocks(path))
    )


@pytest.mark.committed
@pytest.mark.parametrize("name", [name for name in _pages_with_python() if name not in OWN_TESTS])
def test_python_examples_run(
    name: str, keep_default_database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    if name in ALL_SKIPPED:
        pytest.skip(ALL_SKIPPED[name])
    env = {"PGJOBS_DATABASE_URL": keep_default_database.url, **PAGE_ENV.get(name, {})}
    run_python_blocks(ROOT / name, env, monkeypatch)


def test_a_skipped_block_has_one_reason() -> None:
    """Two skip markers in a row are a leftover: one of the reasons is stale."""
    stacked = []
    for path in MARKDOWN:
        lines = [line.strip() for line in path.read_text().splitlines()]
        stacked += [
            f"{path.relative_to(ROOT)}:{number}"
            for number, (line, after) in enumerate(itertools.pairwise(lines), start=2)
            if line.startswith(SKIP) and after.startswith(SKIP)
        ]
    assert stacked == []


def test_pages_left_out_are_listed_with_a_reason() -> None:
    """Every page with Python blocks runs some of them, or says why it cannot; the lists above
    name only pages that exist and still need to be on them."""
    pages = _pages_with_python()
    assert set(OWN_TESTS) <= set(pages)
    for name, reason in ALL_SKIPPED.items():
        assert reason, name
        assert all(b.skip for b in blocks(ROOT / name) if b.lang == "python"), (
            f"{name} runs a block now: take it off ALL_SKIPPED"
        )


def test_readme_transactional_enqueue_runs_on_the_embedded_server(tmp_path: Path) -> None:
    """The README's transactional enqueue, as a newcomer runs it: no PGJOBS_DATABASE_URL, so
    ``pgjobs.get_database().url`` is the embedded server's.  The suite's embedded server
    (``.pgjobs/test``) is reused, in a schema of this test's; one this test started is stopped."""
    pytest.importorskip("pgserver", reason="the embedded server has no wheel for this Python")
    from pgjobs.db import embedded

    python = [b.code for b in blocks(ROOT / "README.md") if b.lang == "python" and not b.skip]
    defined = python[0]  # myapp/jobs.py: the jobs
    snippet = next(code for code in python if "pgjobs.get_database().url" in code)
    assert 'environ["PGJOBS_DATABASE_URL"]' not in snippet  # it used to: KeyError
    check = (
        "database = pgjobs.get_database()\n"
        "with database.connection() as check:\n"
        "    found = check.execute(database.sql('SELECT count(*) FROM {jobs}')).fetchone()\n"
        "print('url:', url)\n"
        "print('jobs:', found[0])\n"
    )
    directory, schema = ROOT / ".pgjobs" / "test", f"pgjobs_readme_{os.getpid()}"
    # No database named anywhere (PGJOBS_DATABASE_URL, DATABASE_URL, a queue.yml): the embedded.
    named = [k for k in os.environ if k.endswith("DATABASE_URL") or k == "PGJOBS_CONFIG"]
    env = {k: v for k, v in os.environ.items() if k not in named}
    env.update(PGJOBS_EMBEDDED_DIR=str(directory), PGJOBS_SCHEMA=schema)
    started = embedded.running_pid(directory) is None
    try:
        done = subprocess.run(
            [sys.executable, "-c", defined + snippet + check], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"host={directory / 'pgdata'}" in done.stdout  # the embedded server's URL
        assert "jobs: 2" in done.stdout  # committed on the psycopg connection and the Session
    finally:
        if embedded.running_pid(directory):
            with psycopg.connect(embedded.start(directory), autocommit=True) as admin:
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if started:
            embedded.stop(directory)


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

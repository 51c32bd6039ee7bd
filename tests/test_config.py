"""config/queue.yml loading and validation (pgjobs.config.queue, pgjobs.config.yamlfile); no
database needed."""

from __future__ import annotations

import dataclasses
import textwrap
from pathlib import Path

import pytest

from pgjobs.config.queue import (
    Config,
    DispatcherConfig,
    WorkerConfig,
    load_config,
    parse_config,
    parse_duration,
)
from pgjobs.config.yamlfile import Problems, did_you_mean, interpolate
from pgjobs.errors import ConfigurationError

REPO_CONFIG = Path(__file__).resolve().parent.parent / "config" / "queue.yml"


@pytest.fixture(autouse=True)
def in_tmp_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run every test in an empty directory, so file names in messages are short and relative."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(text: str, name: str = "queue.yml") -> str:
    path = Path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return name


def problems(text: str, **kwargs: object) -> list[str]:
    """The problems reported for ``text`` written to queue.yml."""
    path = write(text)
    kwargs.setdefault("environ", {})
    with pytest.raises(ConfigurationError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems


# -- finding the file ---------------------------------------------------------------------------


def test_no_file_gives_all_defaults() -> None:
    config = load_config(environ={})
    assert config == Config()
    assert config.workers == (WorkerConfig(queues=("*",), threads=3, processes=1),)
    assert config.dispatchers == (DispatcherConfig(polling_interval=1.0, batch_size=500),)
    assert (config.path, config.env) == (None, "development")
    assert config.heartbeat_interval == 60.0
    assert config.process_alive_threshold == 300.0
    assert config.shutdown_timeout == 5.0
    assert config.preserve_finished_jobs is True
    assert config.clear_finished_jobs_after == 86400.0
    assert config.listen_notify is True
    assert config.max_interruptions == 3
    assert (config.database_url, config.schema, config.app) == (None, None, None)
    assert load_config(environ={"PGJOBS_ENV": "production"}).env == "production"


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Config().env = "production"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        WorkerConfig().threads = 5  # type: ignore[misc]


def test_config_queue_yml_in_cwd_is_used() -> None:
    write("workers:\n  - threads: 7\n", "config/queue.yml")
    config = load_config(environ={})
    assert config.workers[0].threads == 7
    assert config.path == Path("config/queue.yml")


def test_pgjobs_config_names_the_file() -> None:
    write("workers:\n  - threads: 7\n", "config/queue.yml")
    write("workers:\n  - threads: 9\n", "other.yml")
    assert load_config(environ={"PGJOBS_CONFIG": "other.yml"}).workers[0].threads == 9
    # an explicit path beats PGJOBS_CONFIG
    assert load_config("config/queue.yml", environ={"PGJOBS_CONFIG": "other.yml"}).path == Path(
        "config/queue.yml"
    )


def test_missing_named_file_is_an_error() -> None:
    with pytest.raises(ConfigurationError) as info:
        load_config("nope.yml", environ={})
    assert info.value.problems == ["nope.yml: the configuration file does not exist"]
    with pytest.raises(
        ConfigurationError, match=r"^gone\.yml: .* does not exist \(set by PGJOBS_CONFIG\)"
    ):
        load_config(environ={"PGJOBS_CONFIG": "gone.yml"})
    Path("adir").mkdir()
    with pytest.raises(ConfigurationError, match=r"^adir: the configuration file is not a file$"):
        load_config("adir", environ={})


# -- environment sections and flat files ----------------------------------------------------------

SECTIONS = """
    development:
      workers:
        - threads: 1
    test:
    production:
      workers:
        - threads: 8
"""


def test_environment_sections() -> None:
    path = write(SECTIONS)
    assert load_config(path, environ={}).workers[0].threads == 1
    assert load_config(path, env="production", environ={}).workers[0].threads == 8
    prod = load_config(path, environ={"PGJOBS_ENV": "production"})
    assert (prod.env, prod.workers[0].threads) == ("production", 8)
    # the env argument beats PGJOBS_ENV
    assert load_config(path, env="development", environ={"PGJOBS_ENV": "production"}).env == (
        "development"
    )
    # an empty section means all defaults
    assert load_config(path, env="test", environ={}) == Config(path=Path(path), env="test")


def test_missing_section_lists_the_sections() -> None:
    assert problems(SECTIONS, env="prod") == [
        "queue.yml: no section for environment 'prod'; did you mean 'production'? "
        "(sections: development, test, production; select one with PGJOBS_ENV)"
    ]
    assert problems(SECTIONS, environ={"PGJOBS_ENV": "staging"}) == [
        "queue.yml: no section for environment 'staging' "
        "(sections: development, test, production; select one with PGJOBS_ENV)"
    ]


def test_flat_file_is_used_for_every_environment() -> None:
    path = write("""
        heartbeat_interval: 30
        workers:
          - queues: critical
    """)
    for env in ("development", "production", "anything"):
        config = load_config(path, env=env, environ={})
        assert config.heartbeat_interval == 30.0
        assert config.workers == (WorkerConfig(queues=("critical",)),)
        assert config.env == env


def test_flat_file_with_only_misspelt_keys() -> None:
    assert problems("dispatcher:\n  polling_interval: 1\n") == [
        "queue.yml:1: dispatcher: unknown key; did you mean 'dispatchers'?"
    ]


def test_empty_values_take_the_default() -> None:
    path = write("workers:\ndispatchers:\nheartbeat_interval:\nschema: ~\n")
    assert load_config(path, environ={}) == Config(path=Path(path))
    config = load_config(write("workers:\n  - threads:\n    queues:\n"), environ={})
    assert config.workers == (WorkerConfig(),)


def test_empty_file_gives_defaults() -> None:
    assert load_config(write(""), environ={}) == Config(path=Path("queue.yml"))
    assert load_config(write("# only a comment\n"), environ={}).workers == (WorkerConfig(),)
    assert WorkerConfig().prefetch == 200  # claimed jobs that may wait for a thread


def test_workers_and_dispatchers_lists() -> None:
    path = write("workers: []\n")
    config = load_config(path, environ={})
    assert config.workers == ()
    assert config.dispatchers == (DispatcherConfig(),)
    config = load_config(write("dispatchers: []\nworkers:\n  -\n  - threads: 2\n"), environ={})
    assert config.dispatchers == ()
    assert config.workers == (WorkerConfig(), WorkerConfig(threads=2))


def test_full_file() -> None:
    path = write("""
        production:
          dispatchers:
            - polling_interval: 2
              batch_size: 100
              concurrency_maintenance: false
              concurrency_maintenance_interval: 300
          workers:
            - queues: [critical, default, "reports*"]
              threads: 5
              processes: 3
              polling_interval: 0.5
              prefetch: 0
          database_url: postgresql://localhost/app
          schema: pgjobs
          app: shop
          heartbeat_interval: 10
          process_alive_threshold: 60
          shutdown_timeout: 2.5
          preserve_finished_jobs: false
          clear_finished_jobs_after: 12h
          listen_notify: false
          max_interruptions: 5
    """)
    assert load_config(path, env="production", environ={}) == Config(
        workers=(WorkerConfig(("critical", "default", "reports*"), 5, 3, 0.5, prefetch=0),),
        dispatchers=(DispatcherConfig(2.0, 100, False, 300.0),),
        database_url="postgresql://localhost/app",
        schema="pgjobs",
        app="shop",
        heartbeat_interval=10.0,
        process_alive_threshold=60.0,
        shutdown_timeout=2.5,
        preserve_finished_jobs=False,
        clear_finished_jobs_after=43200.0,
        listen_notify=False,
        max_interruptions=5,
        path=Path(path),
        env="production",
    )


# -- anchors and merge keys -----------------------------------------------------------------------


def test_anchors_and_merge_keys() -> None:
    path = write("""
        default: &default
          shutdown_timeout: 10
          dispatchers:
            - polling_interval: 1
          workers:
            - &worker
              queues: "*"
              threads: 3
        development:
          <<: *default
        production:
          <<: *default
          shutdown_timeout: 30
          workers:
            - <<: *worker
              threads: 10
            - *worker
    """)
    dev = load_config(path, environ={})
    assert dev.shutdown_timeout == 10.0
    assert dev.workers == (WorkerConfig(threads=3),)
    prod = load_config(path, env="production", environ={})
    assert prod.shutdown_timeout == 30.0
    assert prod.workers == (WorkerConfig(threads=10), WorkerConfig(threads=3))
    assert prod.dispatchers == (DispatcherConfig(polling_interval=1.0),)


def test_errors_in_merged_settings_point_at_their_line() -> None:
    text = """
        default: &default
          workers:
            - thread: 3
        development:
          <<: *default
    """
    assert problems(text) == [
        "queue.yml:3: workers[0].thread: unknown key; did you mean 'threads'?"
    ]


def test_bad_merge_key() -> None:
    assert problems("development:\n  <<: 5\n") == [
        "queue.yml:2: invalid YAML: expected a mapping or list of mappings for merging, "
        "but found scalar (while constructing a mapping on line 2)"
    ]


# -- ${VAR} interpolation -------------------------------------------------------------------------


def test_interpolation() -> None:
    path = write("""
        database_url: ${DATABASE_URL}
        app: "${APP:-shop}-jobs"
        shutdown_timeout: ${TIMEOUT:-7.5}
        workers:
          - queues: ${QUEUES:-critical,default}
            threads: ${THREADS:-5}
            processes: "${PROCESSES:-2}"
    """)
    environ = {"DATABASE_URL": "postgresql:///app", "THREADS": ""}
    with pytest.raises(ConfigurationError) as info:
        load_config(path, environ=environ)
    # quoted: stays a string, so "2" is not an integer
    assert info.value.problems == [
        "queue.yml:7: workers[0].processes: must be a positive integer, got '2'"
    ]
    path = write(Path(path).read_text().replace('"${PROCESSES:-2}"', "${PROCESSES:-2}"))
    config = load_config(path, environ=environ)
    assert config.database_url == "postgresql:///app"
    assert config.app == "shop-jobs"
    assert config.shutdown_timeout == 7.5
    # unquoted: typed after substitution; an empty variable takes the default
    assert config.workers == (WorkerConfig(("critical", "default"), threads=5, processes=2),)
    config = load_config(path, environ={**environ, "THREADS": "12", "APP": "x", "QUEUES": "*"})
    assert (config.workers[0].threads, config.workers[0].queues, config.app) == (
        12,
        ("*",),
        "x-jobs",
    )


def test_interpolation_to_empty_means_default() -> None:
    config = load_config(write("database_url: ${DATABASE_URL:-}\n"), environ={})
    assert config.database_url is None


def test_unset_variable_is_an_error_naming_file_line_and_variable() -> None:
    text = """
        production:
          workers:
            - threads: 3
              processes: ${JOB_PROCESSES}
          database_url: ${DATABASE_URL}
    """
    assert problems(text, env="production") == [
        "queue.yml:4: workers[0].processes: environment variable JOB_PROCESSES is not set "
        "(write ${JOB_PROCESSES:-default} to give a default)",
        "queue.yml:5: database_url: environment variable DATABASE_URL is not set "
        "(write ${DATABASE_URL:-default} to give a default)",
    ]


def test_only_the_selected_section_is_interpolated() -> None:
    path = write("""
        development:
          app: dev
        production:
          database_url: ${DATABASE_URL}
    """)
    assert load_config(path, environ={}).app == "dev"


def test_bad_variable_reference() -> None:
    assert problems("app: ${APP\n") == [
        "queue.yml:1: app: bad variable reference '${APP'; write ${NAME} or ${NAME:-default}"
    ]
    assert problems("app: ${APP:default}\n")[0].startswith(
        "queue.yml:1: app: bad variable reference"
    )


def test_interpolate_function() -> None:
    assert interpolate("a${X}b${Y:-y}c$${Z}", {"X": "x"}) == "axbyc${Z}"
    assert interpolate("${Y:-d}", {"Y": "set"}) == "set"
    assert interpolate("$HOME and $", {}) == "$HOME and $"
    with pytest.raises(ValueError, match=r"variable A is not set.*variable B is not set"):
        interpolate("${A}${B}", {})


# -- validation ---------------------------------------------------------------------------------

INVALID = [
    # unknown keys, with and without a suggestion
    (
        "workers:\n  - queues: '*'\n    thread: 5\n",
        "queue.yml:3: workers[0].thread: unknown key; did you mean 'threads'?",
    ),
    (
        "dispatchers:\n  - batchsize: 5\n",
        "queue.yml:2: dispatchers[0].batchsize: unknown key; did you mean 'batch_size'?",
    ),
    (
        "heartbeat_intervall: 30\n",
        "queue.yml:1: heartbeat_intervall: unknown key; did you mean 'heartbeat_interval'?",
    ),
    (
        "worker:\n  - threads: 3\n",
        "queue.yml:1: worker: unknown key; did you mean 'workers'?",
    ),
    (
        "workers:\n  - colour: blue\n",
        "queue.yml:2: workers[0].colour: unknown key; "
        "expected one of: polling_interval, prefetch, processes, queues, threads",
    ),
    # numbers
    (
        "workers:\n  - threads: 0\n",
        "queue.yml:2: workers[0].threads: must be a positive integer, got 0",
    ),
    (
        "workers:\n  - threads: 2.5\n",
        "queue.yml:2: workers[0].threads: must be a positive integer, got 2.5",
    ),
    (
        "workers:\n  - threads: '3'\n",
        "queue.yml:2: workers[0].threads: must be a positive integer, got '3'",
    ),
    (
        "workers:\n  - threads: true\n",
        "queue.yml:2: workers[0].threads: must be a positive integer, got true",
    ),
    (
        "workers:\n  - processes: -1\n",
        "queue.yml:2: workers[0].processes: must be a positive integer, got -1",
    ),
    (
        "workers:\n  - prefetch: -1\n",
        "queue.yml:2: workers[0].prefetch: must be a non-negative integer: how many claimed jobs "
        "may wait for a thread (0: claim only for idle threads), got -1",
    ),
    (
        "workers:\n  - prefetch: lots\n",
        "queue.yml:2: workers[0].prefetch: must be a non-negative integer: how many claimed jobs "
        "may wait for a thread (0: claim only for idle threads), got 'lots'",
    ),
    (
        "workers:\n  - prefetch: 1.5\n",
        "queue.yml:2: workers[0].prefetch: must be a non-negative integer: how many claimed jobs "
        "may wait for a thread (0: claim only for idle threads), got 1.5",
    ),
    (
        "workers:\n  - polling_interval: 0\n",
        "queue.yml:2: workers[0].polling_interval: must be a positive number, got 0",
    ),
    (
        "workers:\n  - polling_interval: fast\n",
        "queue.yml:2: workers[0].polling_interval: must be a positive number, got 'fast'",
    ),
    (
        "workers:\n  - polling_interval: .inf\n",
        "queue.yml:2: workers[0].polling_interval: must be a finite number, got inf",
    ),
    (
        "dispatchers:\n  - batch_size: 0\n",
        "queue.yml:2: dispatchers[0].batch_size: must be a positive integer, got 0",
    ),
    (
        "dispatchers:\n  - concurrency_maintenance_interval: -5\n",
        "queue.yml:2: dispatchers[0].concurrency_maintenance_interval: "
        "must be a positive number, got -5",
    ),
    (
        "heartbeat_interval: [1]\n",
        "queue.yml:1: heartbeat_interval: must be a positive number, got a list",
    ),
    (
        "shutdown_timeout: {a: 1}\n",
        "queue.yml:1: shutdown_timeout: must be a positive number, got a mapping",
    ),
    ("max_interruptions: 0\n", "queue.yml:1: max_interruptions: must be a positive integer, got 0"),
    (
        "process_alive_threshold: 30\n",
        "queue.yml:1: process_alive_threshold: must be longer than heartbeat_interval (60)",
    ),
    # booleans
    (
        "dispatchers:\n  - concurrency_maintenance: 'yes'\n",
        "queue.yml:2: dispatchers[0].concurrency_maintenance: must be true or false, got 'yes'",
    ),
    (
        "preserve_finished_jobs: 1\n",
        "queue.yml:1: preserve_finished_jobs: must be true or false, got 1",
    ),
    ("listen_notify: 'false'\n", "queue.yml:1: listen_notify: must be true or false, got 'false'"),
    # strings
    ("database_url: ''\n", "queue.yml:1: database_url: must be a non-empty string, got ''"),
    ("app: 5\n", "queue.yml:1: app: must be a non-empty string, got 5"),
    (
        "schema: my-schema\n",
        "queue.yml:1: schema: must be a PostgreSQL schema name like 'pgjobs', got 'my-schema'",
    ),
    # durations
    (
        "clear_finished_jobs_after: soon\n",
        "queue.yml:1: clear_finished_jobs_after: must be a positive number of seconds or a "
        'duration like "45s", "30m", "12h", "1 day", got \'soon\'',
    ),
    (
        "clear_finished_jobs_after: 0s\n",
        "queue.yml:1: clear_finished_jobs_after: must be a positive",
    ),
    (
        "clear_finished_jobs_after: 3 fortnights\n",
        "queue.yml:1: clear_finished_jobs_after: must be",
    ),
    # queues
    (
        "workers:\n  - queues: []\n",
        'queue.yml:2: workers[0].queues: must name at least one queue ("*" for all)',
    ),
    (
        "workers:\n  - queues: ['*', critical]\n",
        'queue.yml:2: workers[0].queues: "*" means all queues and cannot be combined with other '
        "queue names",
    ),
    (
        "workers:\n  - queues: critical, *\n",
        'queue.yml:2: workers[0].queues: "*" means all queues and cannot be combined',
    ),
    (
        "workers:\n  - queues:\n      - critical\n      - bad name\n",
        "queue.yml:4: workers[0].queues[1]: invalid queue name 'bad name': use letters, digits, "
        '"_", ".", ":", "-" and an optional trailing "*"',
    ),
    (
        "workers:\n  - queues: [critical, 5]\n",
        "queue.yml:2: workers[0].queues[1]: invalid queue name 5",
    ),
    ("workers:\n  - queues: 'a,,b'\n", "queue.yml:2: workers[0].queues: invalid queue name ''"),
    (
        "workers:\n  - queues: 're*ports'\n",
        "queue.yml:2: workers[0].queues: invalid queue name 're*ports'",
    ),
    (
        "workers:\n  - queues: [a, b, a]\n",
        "queue.yml:2: workers[0].queues[2]: queue 'a' is listed twice",
    ),
    (
        "workers:\n  - queues: 7\n",
        "queue.yml:2: workers[0].queues: must be a queue name, a list of them (strict order), or a "
        "mapping of queue names to weights, got 7",
    ),
    (
        "workers:\n  - queues: {a: 1, b: 0}\n",
        "queue.yml:2: workers[0].queues.b: a queue's weight must be a positive integer, got 0",
    ),
    # structure
    (
        "workers:\n  queues: '*'\n",
        "queue.yml:1: workers: must be a list of worker settings (each starting with '- ')",
    ),
    (
        "dispatchers: 3\n",
        "queue.yml:1: dispatchers: must be a list of dispatcher settings (each starting with '- ')",
    ),
    ("workers:\n  - 5\n", "queue.yml:2: workers[0]: must be a mapping of worker settings, got 5"),
    ("- workers\n", "queue.yml:1: the top level must be a mapping of settings"),
    ("workers: []\n1: 2\n", "queue.yml:2: key 1 is not a string"),
]


@pytest.mark.parametrize(
    ("text", "expected"), INVALID, ids=[e.split(": ", 1)[1] for _, e in INVALID]
)
def test_invalid_setting(text: str, expected: str) -> None:
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected)


def test_all_problems_are_reported_at_once_in_line_order() -> None:
    text = """
        production:
          dispatchers:
            - polling_interval: 0
              batch_sise: 10
          workers:
            - queues: ["*", default]
              threads: many
            - processes: 0
          listen_notify: maybe
          shutdown_timout: 3
    """
    found = problems(text, env="production")
    assert found == [
        "queue.yml:3: dispatchers[0].polling_interval: must be a positive number, got 0",
        "queue.yml:4: dispatchers[0].batch_sise: unknown key; did you mean 'batch_size'?",
        'queue.yml:6: workers[0].queues: "*" means all queues and cannot be combined with other '
        "queue names",
        "queue.yml:7: workers[0].threads: must be a positive integer, got 'many'",
        "queue.yml:8: workers[1].processes: must be a positive integer, got 0",
        "queue.yml:9: listen_notify: must be true or false, got 'maybe'",
        "queue.yml:10: shutdown_timout: unknown key; did you mean 'shutdown_timeout'?",
    ]


def test_parse_config_from_a_dict() -> None:
    config = parse_config({"workers": ({"queues": ("a", "b*"), "threads": 2},)}, env="test")
    assert config.workers == (WorkerConfig(("a", "b*"), threads=2),)
    assert config.env == "test"
    with pytest.raises(ConfigurationError) as info:
        parse_config({"workers": [{"threads": 0}], "listen": True})
    assert info.value.problems == [
        "workers[0].threads: must be a positive integer, got 0",
        "listen: unknown key; did you mean 'listen_notify'?",
    ]


# -- queue forms and durations --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("queues", "expected"),
    [
        ('"*"', ("*",)),
        ("critical", ("critical",)),
        ('"critical,default"', ("critical", "default")),
        ("critical, default ,reports*", ("critical", "default", "reports*")),
        ('[critical, default, "reports*"]', ("critical", "default", "reports*")),
        ('["*"]', ("*",)),
        (
            "\n      - mail.high\n      - jobs:v2\n      - low-priority",
            ("mail.high", "jobs:v2", "low-priority"),
        ),
        ("", ("*",)),
    ],
)
def test_queue_forms(queues: str, expected: tuple[str, ...]) -> None:
    config = load_config(write(f"workers:\n  - queues: {queues}\n"), environ={})
    assert config.workers[0].queues == expected


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("1 day", 86400.0),
        ("2 days", 172800.0),
        ("12h", 43200.0),
        ("30m", 1800.0),
        ("45s", 45.0),
        ("90 minutes", 5400.0),
        ("1.5 hours", 5400.0),
        ("1h 30m", 5400.0),
        ("1 week", 604800.0),
        ("1.day", 86400.0),
        ("3600", 3600.0),
        (" 10 Seconds ", 10.0),
        (3600, 3600.0),
        (0.5, 0.5),
    ],
)
def test_durations(value: object, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_duration_in_the_file() -> None:
    config = load_config(write("clear_finished_jobs_after: 2 days\n"), environ={})
    assert config.clear_finished_jobs_after == 172800.0


# -- YAML syntax ----------------------------------------------------------------------------------


def test_bad_yaml_syntax_is_one_clear_error() -> None:
    text = """
        workers:
          - threads: 3
           processes: 2
    """
    assert problems(text) == [
        "queue.yml:3: invalid YAML: expected <block end>, but found '<block mapping start>' "
        "(while parsing a block collection on line 2)"
    ]
    found = problems("workers: [critical\nthreads: 3\n")
    assert len(found) == 1
    assert found[0].startswith("queue.yml:2: invalid YAML: ")
    assert "(while parsing a flow sequence on line 1)" in found[0]
    assert problems("workers:\n\t- threads: 3\n") == [
        "queue.yml:2: invalid YAML: found character '\\t' that cannot start any token "
        "(while scanning for the next token); indent with spaces, not tabs"
    ]
    assert problems("workers:\n  - queues: *\n") == [
        "queue.yml:2: invalid YAML: expected alphabetic or numeric character, but found '\\n' "
        '(while scanning an alias on line 2); quote values that start with "*", as in queues: "*"'
    ]
    assert problems("workers: *nothing\n") == [
        "queue.yml:1: invalid YAML: found undefined alias 'nothing'"
    ]
    assert problems("a: 1\n---\nb: 2\n")[0].startswith(
        "queue.yml:2: invalid YAML: but found another document"
    )
    assert problems("app: !ruby/object foo\n")[0].startswith(
        "queue.yml:1: invalid YAML: could not determine a constructor for the tag '!ruby/object'"
    )


# -- helpers --------------------------------------------------------------------------------------


def test_did_you_mean() -> None:
    assert did_you_mean("thread", ["threads", "processes"]) == "did you mean 'threads'?"
    assert did_you_mean("Threads", ["threads"]) == "did you mean 'threads'?"
    assert (
        did_you_mean("prod", ["development", "production", "test"]) == "did you mean 'production'?"
    )
    assert did_you_mean("xyzzy", ["threads"]) == ""


def test_problems_collector() -> None:
    collected = Problems("q.yml")
    collected.raise_if_any()  # nothing yet
    collected.add("second", line=9, where="b")
    collected.add("first", line=2, where="a")
    collected.add("whole file")
    assert len(collected) == 3
    assert collected.messages == ["q.yml: whole file", "q.yml:2: a: first", "q.yml:9: b: second"]
    with pytest.raises(ConfigurationError) as info:
        collected.raise_if_any()
    assert info.value.problems == collected.messages
    bare = Problems()
    bare.add("oops", line=3, where="x")
    assert bare.messages == ["x: oops"]


# -- the example config/queue.yml in this repository ----------------------------------------------


@pytest.mark.parametrize("env", ["development", "test", "production"])
def test_repository_queue_yml_loads(env: str) -> None:
    config = load_config(REPO_CONFIG, env=env, environ={})
    assert config.env == env
    assert config.dispatchers == (DispatcherConfig(polling_interval=1.0, batch_size=500),)
    if env == "production":
        assert config.workers == (
            WorkerConfig(queues=("critical", "default"), threads=5, processes=2),
            WorkerConfig(queues=("*",), threads=3, processes=1),
        )
    else:
        assert config.workers == (WorkerConfig(queues=("*",), threads=3, processes=1),)
    assert dataclasses.replace(config, workers=(), dispatchers=(), path=None) == Config(
        workers=(), dispatchers=(), env=env
    )


def test_repository_queue_yml_reads_job_concurrency() -> None:
    config = load_config(REPO_CONFIG, env="development", environ={"JOB_CONCURRENCY": "4"})
    assert config.workers[0].processes == 4

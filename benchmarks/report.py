"""Writing a run's results: ``benchmarks/results/<date>.json`` and ``<date>.md``."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import history, hosts, report_long

BASE = "pgjobs"
DASH = "\u2013"  # en dash: ranges, and empty cells
TIMES = "\u00d7"  # multiplication sign: ratios
LIMITED = "\u2020"  # dagger: a run stopped at the time limit
# (scenario, key, label, higher is better)
ROWS: tuple[tuple[str, str | None, str, bool], ...] = (
    ("single", None, "single enqueue (jobs/s)", True),
    ("bulk", None, "bulk enqueue (jobs/s)", True),
    ("bulk_fast", None, "bulk enqueue, one class, no handles (jobs/s)", True),
    ("drain", None, "drain, best configuration (jobs/s)", True),
    ("latency", "p50", "latency p50 (ms)", False),
    ("latency", "p95", "latency p95 (ms)", False),
    ("latency", "p99", "latency p99 (ms)", False),
)


SCENARIOS_TIMED = ("single", "bulk", "bulk_fast", "drain")
#: A row compared with another scenario of the peers: pgjobs' fast path for many jobs of one
#: class against the peers' bulk enqueue (their bulk API is already of that kind, or their only).
AGAINST = {"bulk_fast": "bulk"}
#: Beyond this many systems the results table lists systems as rows (it would be too wide).
WIDE = 3


def write(results: dict[str, Any], out_dir: Path, name: str | None = None) -> tuple[Path, Path]:
    """Write the JSON and Markdown files, never overwriting an earlier run."""
    out_dir.mkdir(parents=True, exist_ok=True)
    base = name or results["date"][:10]
    stem, k = base, 1
    while (out_dir / f"{stem}.md").exists() or (out_dir / f"{stem}.json").exists():
        k += 1
        stem = f"{base}-{k}"
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    md_path.write_text(render(results))
    return json_path, md_path


# -- formatting -----------------------------------------------------------------------------


def _num(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.2f}" if value < 100 else f"{value:,.0f}"
    return f"{value:,.0f}"


def _cell(summary: dict[str, Any] | None, unit: str) -> str:
    if not summary:
        return DASH
    text = _num(summary["median"], unit)
    if len(summary["samples"]) > 1:
        text += f" ({_num(summary['min'], unit)}{DASH}{_num(summary['max'], unit)})"
    if summary.get("time_limited"):
        text += " " + LIMITED
    return text


def _summary(system: dict[str, Any], scenario: str, key: str | None) -> dict[str, Any] | None:
    data = system.get(scenario)
    if data is None:
        return None
    found: dict[str, Any] | None = data[key] if key else data
    return found


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> str:
    if not a or not b or not b["median"]:
        return DASH
    return f"{a['median'] / b['median']:.2f}{TIMES}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _proxy(results: dict[str, Any], scenario: str) -> str:
    limits = results.get("limits")
    systems = results["systems"]
    if not limits:
        return ""
    base = systems.get(BASE, {})
    if scenario == "single":
        insert = limits["insert"]["median"]
        text = f"one-row INSERT+COMMIT: {insert:,.0f}/s"
        if base.get("single"):
            text += f" (pgjobs at {base['single']['median'] / insert:.0%})"
        return text
    if scenario == "latency" and limits.get("paced_insert"):
        paced = limits["paced_insert"]
        return (
            f"one INSERT+COMMIT at {paced['rate']:g}/s: p50 {paced['p50']['median']:.2f} ms, "
            f"p99 {paced['p99']['median']:.2f} ms (a job needs two: enqueue, claim)"
        )
    if scenario == "drain":
        one, two = limits["claim_1"]["median"], limits["claim_2"]["median"]
        return f"claim 100/statement: {one:,.0f} rows/s (1 client), {two:,.0f} (2 clients)"
    return ""


def targets(results: dict[str, Any]) -> list[list[str]]:
    """The issue's targets, each with what was measured and whether it is met."""
    systems = results["systems"]
    base, peer = systems.get(BASE, {}), systems.get("pgqueuer", {})
    limits = results.get("limits") or {}
    rows: list[list[str]] = []

    def ratio_target(label: str, scenario: str, factor: float) -> None:
        if base.get(scenario) and peer.get(scenario):
            ratio = base[scenario]["median"] / peer[scenario]["median"]
            wanted = factor * peer[scenario]["median"]
            measured = f"{ratio:.2f}{TIMES} ({base[scenario]['median']:,.0f} vs ≥{wanted:,.0f})"
            rows.append([label, measured, "yes" if ratio >= factor else "**no**"])

    ratio_target(f"drain ≥ 1.5{TIMES} pgqueuer's best", "drain", 1.5)
    ratio_target(f"single enqueue ≥ 2{TIMES} pgqueuer", "single", 2.0)
    if base.get("single") and limits.get("insert"):
        share = base["single"]["median"] / limits["insert"]["median"]
        rows.append(
            [
                "single enqueue ≥ 70% of the one-row INSERT rate",
                f"{share:.0%}",
                "yes" if share >= 0.7 else "**no**",
            ]
        )
    ratio_target(f"bulk enqueue ≥ 2{TIMES} pgqueuer", "bulk", 2.0)
    latency = base.get("latency")
    if latency:
        for key, limit in (("p50", 2.0), ("p99", 10.0)):
            value = latency[key]["median"]
            label = f"latency {key} ≤ {limit:g} ms at {results['options']['latency_rate']:g} jobs/s"
            rows.append([label, f"{value:.2f} ms", "yes" if value <= limit else "**no**"])
    return rows


def enqueue_targets(results: dict[str, Any]) -> list[list[str]]:
    """Issue 22's enqueue targets against pgqueuer (and the one-row INSERT rate of pgbench)."""
    systems = results["systems"]
    base, peer = systems.get(BASE, {}), systems.get("pgqueuer", {})
    limits = results.get("limits") or {}
    rows: list[list[str]] = []
    for label, scenario, against, factor in (
        (f"bulk enqueue (perform_all_later) ≥ 1{TIMES} pgqueuer's bulk", "bulk", "bulk", 1.0),
        (
            f"bulk of one class (perform_all_later_args) ≥ 1.3{TIMES} pgqueuer's bulk",
            "bulk_fast",
            "bulk",
            1.3,
        ),
        (f"single enqueue ≥ 1.5{TIMES} pgqueuer", "single", "single", 1.5),
    ):
        if base.get(scenario) and peer.get(against):
            mine, theirs = base[scenario]["median"], peer[against]["median"]
            rows.append(
                [
                    label,
                    f"{mine / theirs:.2f}{TIMES} ({mine:,.0f} vs ≥{factor * theirs:,.0f})",
                    "yes" if mine >= factor * theirs else "**no**",
                ]
            )
    if base.get("single") and limits.get("insert"):
        single, insert = base["single"]["median"], limits["insert"]["median"]
        share = single / insert
        rows.append(
            [
                "single enqueue ≥ 60% of the one-row INSERT rate",
                f"{share:.0%} ({single:,.0f} vs {insert:,.0f})",
                "yes" if share >= 0.6 else "**no**",
            ]
        )
    return rows


def render(results: dict[str, Any]) -> str:
    systems: dict[str, Any] = results["systems"]
    names = list(systems)
    o = results["options"]
    out: list[str] = [f"# Benchmark results, {results['date'][:16].replace('T', ' ')} UTC", ""]
    out += [f"Command: `{results['command']}`", ""]
    short = [x for x in o["only"] if x in ("single", "bulk", "drain", "latency")]
    out += [
        (
            f"{o['jobs']:,} jobs per run, {o['repeat']} runs each, bulk batches of {o['batch']:,}; "
            f"latency: {o['latency_rate']:g} jobs/s for {o['latency_seconds']:g} s per run. "
            if short
            else f"Scenarios: {', '.join(o['only'])}. "
        )
        + f"Whole run: {results['duration_s'] / 60:.1f} min. Each measurement ran on a fresh "
        "database created from a template holding only the system's schema, dropped afterwards"
        + (
            f" (the Redis peers, {', '.join(_redis_systems(systems))}: on the benchmark's own "
            "redis-server, flushed before each measurement)."
            if _redis_systems(systems)
            else "."
        ),
    ]
    if short:
        out += [
            "",
            "## Results",
            "",
            f"Median of the runs, (min{DASH}max) in brackets. Ratios are medians, pgjobs/peer: "
            "above 1 pgjobs is faster for throughput; for latency below 1 is better.",
            "",
        ]
    if short and len(names) > WIDE:
        out += _by_system(results)
    else:
        out += _by_scenario(results)
    if _redis_systems(systems):
        out += ["", _redis_note(results)]
    best = [f"{n}: {systems[n]['drain']['best']}" for n in names if systems[n].get("drain")]
    if best:
        out += ["", "Best drain configuration: " + "; ".join(best) + "."]
    if any((systems[n].get(s) or {}).get("time_limited") for n in names for s in SCENARIOS_TIMED):
        out += [
            "",
            f"{LIMITED} at least one run reached the time limit ({o['time_limit']:g} s) before "
            f"its {o['jobs']:,} jobs: its rate is that of the jobs done by then.",
        ]

    goal_rows = targets(results)
    goal_rows += report_long.backlog_targets(systems) + report_long.soak_targets(systems)
    if goal_rows:
        out += ["", "## Targets (issue 9)", ""]
        out += _table(["target", "measured", "met"], goal_rows)
    enqueue_rows = enqueue_targets(results)
    if enqueue_rows:
        out += ["", "## Enqueue targets (issue 22)", ""]
        out += _table(["target", "measured", "met"], enqueue_rows)

    out += _drain_sections(systems)
    out += _latency_section(systems)
    out += report_long.backlog_render(results)
    out += report_long.soak_render(results)
    out += hosts.render(results)
    out += history.render(results)
    out += _limits_section(results.get("limits"))
    out += _machine_section(results["machine"])
    out += ["", "## Settings used", ""]
    for name in names:
        out += [f"**{name}** {systems[name].get('version', '')}", ""]
        for key, value in systems[name].get("settings", {}).items():
            if "\n" in str(value):
                out += [f"- {key}:", "", "```yaml", str(value).rstrip(), "```", ""]
            else:
                out += [f"- {key}: {value}"]
        out += [""]
    return "\n".join(out).rstrip() + "\n"


def _redis_systems(systems: dict[str, Any]) -> list[str]:
    return [n for n, s in systems.items() if s.get("store") == "redis"]


def _redis_note(results: dict[str, Any]) -> str:
    redis = results["machine"].get("redis") or {}
    settings = redis.get("settings", {})
    persistence = (
        f"redis-server {redis.get('version', '?')}, save `{settings.get('save', '?')}`, "
        f"appendonly {settings.get('appendonly', '?')}"
        if redis
        else "redis-server"
    )
    return (
        f"Stores: {', '.join(_redis_systems(results['systems']))} keep their jobs in Redis "
        f"({persistence}: Debian's configuration as shipped, RDB snapshots only). Their enqueue "
        "returns once Redis holds the job in memory; a crash loses what came after the last "
        "snapshot. The PostgreSQL systems' enqueue returns after the commit's WAL flush. Their "
        "drains are counted from each library's own Redis keys (waiting list, unacked or "
        "finished sets), not from a counter in the job."
    )


def _by_scenario(results: dict[str, Any]) -> list[str]:
    """The results table with one column per system (and per ratio): up to WIDE systems."""
    systems: dict[str, Any] = results["systems"]
    names = list(systems)
    peers = [n for n in names if n != BASE]
    header = [
        "",
        *names,
        *[f"pgjobs/{p}" for p in peers if BASE in systems],
        "physical-limit proxy",
    ]
    rows = []
    for scenario, key, label, _ in ROWS:
        unit = "ms" if scenario == "latency" else "jobs/s"
        cells = [_cell(_summary(systems[n], scenario, key), unit) for n in names]
        if all(c == DASH for c in cells):
            continue
        ratios = []
        if BASE in systems:
            base = _summary(systems[BASE], scenario, key)
            against = AGAINST.get(scenario, scenario)
            ratios = [_ratio(base, _summary(systems[p], against, key)) for p in peers]
        proxy = _proxy(results, scenario) if key in (None, "p50") else ""
        rows.append([label, *cells, *ratios, proxy])
    return _table(header, rows) if rows else []


def _by_system(results: dict[str, Any]) -> list[str]:
    """The results with one row per system, then the ratios pgjobs/peer, then the proxies."""
    systems: dict[str, Any] = results["systems"]
    names = list(systems)
    shown = [
        (scenario, key, label)
        for scenario, key, label, _ in ROWS
        if any(_summary(systems[n], scenario, key) for n in names)
    ]
    out = _table(
        ["system", "store", *[label for _, _, label in shown]],
        [
            [
                f"**{n}**" if n == BASE else n,
                "Redis" if systems[n].get("store") == "redis" else "PostgreSQL",
                *[
                    _cell(_summary(systems[n], scenario, key), "ms" if key else "jobs/s")
                    for scenario, key, _ in shown
                ],
            ]
            for n in names
        ],
    )
    peers = [n for n in names if n != BASE]
    if BASE in systems and peers:
        out += [
            "",
            f"pgjobs/peer, medians (throughput: above 1{TIMES} pgjobs is faster; latency: "
            f"below 1{TIMES} pgjobs is faster):",
            "",
        ]
        out += _table(
            ["peer", *[label.split(" (")[0] for _, _, label in shown]],
            [
                [
                    p,
                    *[
                        _ratio(
                            _summary(systems[BASE], scenario, key),
                            _summary(systems[p], AGAINST.get(scenario, scenario), key),
                        )
                        for scenario, key, _ in shown
                    ],
                ]
                for p in peers
            ],
        )
    proxies = [
        f"- {label.split(' (')[0]}: {proxy}"
        for scenario, key, label in shown
        if key in (None, "p50") and (proxy := _proxy(results, scenario))
    ]
    if proxies:
        out += ["", "Physical-limit proxy (PostgreSQL, no queue in the way):", "", *proxies]
    return out


def _drain_sections(systems: dict[str, Any]) -> list[str]:
    drains = {n: s["drain"] for n, s in systems.items() if s.get("drain")}
    if not drains:
        return []
    out = ["", "## Drain: configurations swept (one run each; the best then repeated)", ""]
    rows = []
    for name, drain in drains.items():
        for run in drain["sweep"]:
            fp = run["footprint"]
            rss = ", ".join(f"{k} {v['rss_mb']:.0f}" for k, v in fp["kinds"].items())
            mark = "**" if run["setup"] == drain["best"] else ""
            limited = " " + LIMITED if run["time_limited"] else ""
            rows.append(
                [
                    name,
                    f"{mark}{run['setup']}{mark}",
                    f"{run['rate']:,.0f}{limited}",
                    f"{run['seconds']:.2f}",
                    str(fp["total_connections"]),
                    rss,
                ]
            )
    out += _table(
        [
            "system",
            "configuration",
            "jobs/s",
            "seconds",
            "DB connections",
            "max RSS per process (MiB)",
        ],
        rows,
    )
    base = drains.get(BASE)
    if base:
        fp = base["footprint"]
        out += ["", f"## Footprint of pgjobs under load ({base['best']}, last drain run)", ""]
        out += [
            "Connections counted in `pg_stat_activity` by `application_name`, at most seen "
            "during the drain; RSS is the largest seen for one process of that kind.",
            "",
        ]
        unsampled = {
            name.removeprefix("pgjobs-"): n
            for name, n in fp["connections"].items()
            if name.startswith("pgjobs-") and name.removeprefix("pgjobs-") not in fp["kinds"]
        }
        rows = [
            [
                kind,
                str(v["processes"]),
                DASH if v["connections"] is None else f"{v['connections_per_process']:g}",
                f"{v['rss_mb']:.1f}",
            ]
            for kind, v in fp["kinds"].items()
        ]
        # Connections of a kind of process the sampler did not recognise (none in new runs).
        rows += [
            [f"{kind} (connections only)", DASH, str(n), DASH] for kind, n in unsampled.items()
        ]
        out += _table(["process", "count", "DB connections each", "RSS each (MiB)"], rows)
    peer_rows = []
    for name, drain in drains.items():
        if name == BASE:
            continue
        fp = drain["footprint"]
        for kind, v in fp["kinds"].items():
            per = fp["total_connections"] / v["processes"] if v["processes"] else 0
            peer_rows.append([name, kind, str(v["processes"]), f"{per:g}", f"{v['rss_mb']:.1f}"])
    if peer_rows:
        redis = _redis_systems(systems)
        out += [
            "",
            "Peers under the same load (their connections carry no application_name; "
            "connections each = all connections to the database / processes"
            + (
                f"; for {', '.join(redis)}: clients of the redis-server, from `CLIENT LIST`"
                if redis
                else ""
            )
            + "):",
            "",
        ]
        out += _table(
            ["system", "process", "count", "DB connections each", "RSS each (MiB)"], peer_rows
        )
    return out


def _latency_section(systems: dict[str, Any]) -> list[str]:
    lat = {n: s["latency"] for n, s in systems.items() if s.get("latency")}
    if not lat:
        return []
    out = ["", "## Latency detail (ms, median of the runs' percentiles)", ""]
    out += [
        "From the enqueue call (timestamp taken just before it) to the job's first line; "
        '"from commit" counts from the moment the enqueue call returned.',
        "",
    ]
    fmt: Callable[[dict[str, Any]], str] = lambda s: f"{s['median']:.2f}"  # noqa: E731
    rows = [
        [
            n,
            v["setup"],
            fmt(v["p50"]),
            fmt(v["p95"]),
            fmt(v["p99"]),
            fmt(v["max"]),
            f"{fmt(v['commit_p50'])} / {fmt(v['commit_p99'])}",
            fmt(v["enqueue_p50"]),
        ]
        for n, v in lat.items()
    ]
    out += _table(
        [
            "system",
            "worker",
            "p50",
            "p95",
            "p99",
            "max",
            "from commit p50 / p99",
            "enqueue call p50",
        ],
        rows,
    )
    return out


def _limits_section(limits: dict[str, Any] | None) -> list[str]:
    if not limits:
        return []
    out = ["", "## Physical-limit proxy", "", f"Measured with {limits['tool']}.", ""]
    out += _table(
        ["loop", "rate"],
        [
            [f"`{limits['insert_sql']}`, one client", _cell(limits["insert"], "") + " commits/s"],
            *(
                [
                    [
                        f"the same INSERT at {limits['paced_insert']['rate']:g}/s: commit latency",
                        " / ".join(
                            f"{k} {_cell(limits['paced_insert'][k], 'ms')}"
                            for k in ("p50", "p95", "p99")
                        )
                        + " ms",
                    ]
                ]
                if limits.get("paced_insert")
                else []
            ),
            [f"`{limits['claim_sql']}`, one client", _cell(limits["claim_1"], "") + " rows/s"],
            ["the same, two clients", _cell(limits["claim_2"], "") + " rows/s"],
        ],
    )
    return out


def _loads(loads: list[float]) -> str:
    if not loads:
        return "- load average after each measurement: not recorded"
    ordered = sorted(loads)
    return (
        f"- 1-minute load average after each of the {len(loads)} measurements: "
        f"{ordered[0]:g}{DASH}{ordered[-1]:g} (median {ordered[len(ordered) // 2]:g}); the "
        "benchmark alone keeps it near 1-2, more means other work competed for the CPU"
    )


def _machine_section(machine: dict[str, Any]) -> list[str]:
    out = ["", "## Machine", ""]
    out += [
        f"- CPU: {machine['cores']} cores, {machine['cpu']}",
        f"- memory: {machine['memory_gib']} GiB",
        f"- OS: {machine['os']}",
        f"- PostgreSQL {machine['postgresql']} (same machine, over TCP on 127.0.0.1)",
        f"- Python {machine['python']}",
        f"- load average at start: {', '.join(map(str, machine['load_average_at_start']))}"
        + (
            f"; at end: {', '.join(map(str, machine['load_average_at_end']))}"
            if machine.get("load_average_at_end")
            else ""
        ),
        _loads(machine.get("load_average_after_each_measurement") or []),
        f"- pgjobs source: {machine.get('pgjobs_revision', 'unknown')}",
        "- packages: " + ", ".join(f"{k} {v}" for k, v in machine["packages"].items()),
        "- PostgreSQL settings: "
        + ", ".join(f"{k}={v}" for k, v in machine["postgresql_settings"].items()),
    ]
    redis = machine.get("redis")
    if redis:
        out += [
            f"- Redis {redis['version']} (same machine, over TCP on 127.0.0.1; `{redis['binary']}` "
            f"started by the benchmark, configuration file: {redis['config_file']}): "
            + ", ".join(f"{k}={v}" for k, v in redis["settings"].items())
        ]
    return out

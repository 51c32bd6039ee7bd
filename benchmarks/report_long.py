"""The Markdown of the two long scenarios, backlog and soak (see :mod:`benchmarks.report`)."""

from __future__ import annotations

from typing import Any

from benchmarks.footprint import cpu_delta

DASH, TIMES = "\u2013", "\u00d7"
BACKLOG_PLAN_LIMIT = 50  # jobs in the EXPLAINed claims (benchmarks.backlog.PLAN_LIMIT)
SOAK_PLAN_LIMIT = 10  # (benchmarks.soak.PLAN_LIMIT)


# -- backlog --------------------------------------------------------------------------------


def _cell(entry: dict[str, Any]) -> str:
    text = f"{entry['median']:,.0f}"
    if len(entry["samples"]) > 1:
        text += f" ({entry['min']:,.0f}{DASH}{entry['max']:,.0f})"
    return text + (" \u2020" if entry.get("time_limited") else "")


def _startup(startup: dict[str, Any] | None) -> str:
    if not startup:
        return DASH
    cpu = startup["cpu_s"]
    scheduler = sum(v for k, v in cpu.items() if k.endswith("scheduler"))
    return f"{cpu['total']:.1f} ({scheduler:.1f})"


def backlog_targets(systems: dict[str, Any]) -> list[list[str]]:
    data = (systems.get("pgjobs") or {}).get("backlog")
    if not data:
        return []
    ratios = data["ratios"]
    worst = min(ratios["ready_large"], ratios["finished_large"])
    large = data["cases"]["ready_large"]["ready"]
    label = f"backlog: drain with {large:,} ready or finished jobs ≥ 90 % of the rate with " + (
        f"{data['measured_jobs']:,}"
    )
    measured = (
        f"{ratios['ready_large']:.0%} with {large:,} ready, "
        f"{ratios['finished_large']:.0%} with {large:,} finished"
    )
    return [[label, measured, "yes" if worst >= 0.9 else "**no**"]]


def backlog_render(results: dict[str, Any]) -> list[str]:
    systems = {n: s["backlog"] for n, s in results["systems"].items() if s.get("backlog")}
    if not systems:
        return []
    any_data = next(iter(systems.values()))
    n = any_data["measured_jobs"]
    o = results["options"]
    autovacuum = results["machine"]["postgresql_settings"].get("autovacuum", "?")
    out = ["", "## Backlog scaling", ""]
    out += [
        f"Each case: jobs {n // 10 + 1:,} to {n:,} in claim order (the first {n // 10:,} are "
        f"the warm-up), timed from the moment the first {n // 10:,} were all done to the moment "
        f"the first {n:,} were all done (the end of the drain in the first case): the rate, and "
        "the CPU time the system's processes and their PostgreSQL backends used meanwhile, per "
        f"job. Median of {o['repeat']} runs (min{DASH}max). Each run on a "
        "fresh database loaded straight into the tables with SQL (the rows the system's enqueue "
        "and worker write), then `VACUUM (ANALYZE)`. Ratios are to the first case (for CPU, "
        "above 1 means each job costs more).",
        "",
    ]
    rows = []
    for name, data in systems.items():
        for key, case in data["cases"].items():
            rows.append(
                [
                    name,
                    case["label"],
                    _cell(case),
                    f"{data['ratios'][key]:.2f}{TIMES}",
                    _cell(case["cpu_us_per_job"]),
                    f"{data['cpu_ratios'][key]:.2f}{TIMES}",
                ]
            )
            if case.get("sustained"):
                rows.append(
                    [
                        name,
                        f"{case['label']}, sustained {data['window_s']:g} s",
                        _cell(case["sustained"]),
                        f"{case['sustained']['median'] / case['median']:.2f}{TIMES} of the line "
                        "above",
                        _cell(case["sustained_cpu_us_per_job"]),
                        DASH,
                    ]
                )
    out += _table(["system", "case", "jobs/s", "ratio", "CPU µs/job", "ratio"], rows)
    workers = "; ".join(f"{n}: {d['setup']}" for n, d in systems.items())
    out += [
        "",
        f"Workers: {workers}. Sustained: the same drain left running for "
        f"{any_data['window_s']:g} s from the first claim (or until the queue was empty), timed "
        "from the end of the warm-up; it includes the cost of the dead rows the drain leaves "
        f"behind, which only vacuum removes (autovacuum is {autovacuum} on this server).",
        "",
        "CPU µs per job by process (median of the runs; `db:` = that process's PostgreSQL "
        "backends, by application_name):",
        "",
    ]
    for name, data in systems.items():
        kinds = sorted({k for c in data["cases"].values() for k in c["cpu_by_kind"]})
        out += _table(
            ["system", "case", *kinds],
            [
                [name, c["label"], *(f"{c['cpu_by_kind'].get(k, 0.0):.1f}" for k in kinds)]
                for c in data["cases"].values()
            ],
        )
        out += [""]
    out += [
        "Each run (from first claim: the rate counting the warm-up too; start-up: the CPU the "
        "system used from its start until idle, before the ready jobs appeared, and in brackets "
        "that of its scheduler process and backends, where pgjobs runs `clear_finished` at "
        "start-up; load: writing and vacuuming the rows, s):",
        "",
    ]
    rows = []
    for name, data in systems.items():
        for case in data["cases"].values():
            for k, run in enumerate(case["runs"]):
                sus = run.get("sustained")
                rows.append(
                    [
                        name,
                        case["label"],
                        str(k + 1),
                        f"{run['rate']:,.0f}",
                        f"{run['cpu_us_per_job']['total']:.0f}",
                        f"{run['seconds']:.2f}",
                        f"{run['rate_from_first_claim']:,.0f}",
                        _startup(run.get("startup")),
                        f"{run['load_s']:.0f}",
                        f"{sus['rate']:,.0f}/s, {sus['cpu_us_per_job']['total']:.0f} µs/job "
                        f"({sus['jobs']:,} jobs in {sus['seconds']:.1f} s)"
                        if sus
                        else DASH,
                    ]
                )
    out += _table(
        [
            "system",
            "case",
            "run",
            "jobs/s",
            "CPU µs/job",
            "seconds",
            "from first claim",
            "start-up CPU s (scheduler)",
            "load",
            "sustained",
        ],
        rows,
    )
    for name, data in systems.items():
        for key, plan in data.get("claim_plans", {}).items():
            out += [
                "",
                f"{name}: `EXPLAIN (ANALYZE, BUFFERS)` of one claim of {BACKLOG_PLAN_LIMIT} jobs "
                f"before the workers started, {data['cases'][key]['label']} "
                "(in a transaction rolled back):",
                "",
                "```",
                plan,
                "```",
            ]
    return out


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


# -- soak -----------------------------------------------------------------------------------


def _mib(n: int) -> str:
    return f"{n / 2**20:,.1f}"


def _near(samples: list[dict[str, Any]], t: float) -> dict[str, Any]:
    return min(samples, key=lambda s: abs(s["t"] - t))


def _cpu_per_job(data: dict[str, Any], sample: dict[str, Any]) -> str:
    """CPU µs per job over the minute (or the span of samples) before ``sample``."""
    if "cpu_s" not in sample:
        return DASH
    earlier = [s for s in data["samples"] if "cpu_s" in s and s["t"] <= sample["t"] - 59]
    if not earlier:
        earlier = [s for s in data["samples"] if "cpu_s" in s and s["t"] < sample["t"]]
    if not earlier:
        return DASH
    start = earlier[-1]
    used = sum(cpu_delta(start["cpu_s"], sample["cpu_s"]).values())
    jobs = (sample["t"] - start["t"]) * data["rate"]
    return f"{used / jobs * 1e6:.0f}" if jobs > 0 else DASH


def soak_targets(systems: dict[str, Any]) -> list[list[str]]:
    data = (systems.get("pgjobs") or {}).get("soak")
    if not data:
        return []
    first, last = data["first"], data["last"]
    flat = last["p50"] <= 1.5 * first["p50"] and last["p99"] <= 1.5 * first["p99"]
    minute, end = _near(data["samples"], data["edge_s"]), data["samples"][-1]
    hot = ("pgjobs_ready_executions", "pgjobs_claimed_executions")
    grew = [
        f"{n.removeprefix('pgjobs_')} {_mib(minute['tables'][n]['total_bytes'])} → "
        f"{_mib(end['tables'][n]['total_bytes'])} MiB"
        for n in hot
        if n in end["tables"]
    ]
    small = all(
        end["tables"][n]["total_bytes"] <= 1.5 * max(minute["tables"][n]["total_bytes"], 1 << 16)
        for n in hot
        if n in end["tables"]
    )
    hold = "with" if data["hold"] else "without"
    return [
        [
            f"soak ({data['seconds'] / 60:g} min at {data['rate']:g} jobs/s, {hold} a long "
            f"transaction): latency flat (last {data['edge_s']:g} s ≤ 1.5{TIMES} the first)",
            f"p50 {first['p50']:.2f} → {last['p50']:.2f} ms, p99 {first['p99']:.2f} → "
            f"{last['p99']:.2f} ms",
            "yes" if flat else "**no**",
        ],
        [
            f"soak: execution tables' total size flat (end ≤ 1.5{TIMES} the size at "
            f"{data['edge_s']:g} s)",
            ", ".join(grew),
            "yes" if small else "**no**",
        ],
    ]


def soak_render(results: dict[str, Any]) -> list[str]:
    systems = {n: s["soak"] for n, s in results["systems"].items() if s.get("soak")}
    out: list[str] = []
    for name, data in systems.items():
        server = data["server"]
        hold = (
            "with another connection holding a REPEATABLE READ snapshot open from the first "
            "job to the last"
            if data["hold"]
            else "with no long transaction (control run)"
        )
        out += ["", f"## Soak: {name}", ""]
        out += [
            f"{data['seconds']:g} s of jobs enqueued at {data['rate']:g}/s ({data['jobs']:,} jobs, "
            f"one transaction each) and processed by one worker ({data['setup']}), {hold}. "
            f"Server: autovacuum={server['autovacuum']} (naptime {server['autovacuum_naptime']})"
            + (
                " — **autovacuum is off on this server: nothing vacuumed the tables during the "
                "run**, whatever the long transaction did; only page pruning and index-entry "
                "killing, which a held snapshot also blocks, could clear dead rows."
                if server["autovacuum"] == "off"
                else "."
            ),
            "",
            "Table storage options: "
            + "; ".join(f"{t}: {', '.join(o) or 'none'}" for t, o in server["reloptions"].items())
            + ".",
            "",
            f"Enqueue→start latency (ms), first vs last {data['edge_s']:g} s of enqueueing "
            f"(the enqueuer took {data['enqueue_seconds']:.0f} s for its {data['seconds']:g} s "
            f"schedule; jobs never started: {data['missing']}):",
            "",
        ]
        rows = [
            [label, str(v["jobs"]), *(f"{v[k]:.2f}" for k in ("p50", "p95", "p99", "max"))]
            for label, v in (("first", data["first"]), ("last", data["last"]))
        ]
        out += _table(["window", "jobs", "p50", "p95", "p99", "max"], rows)
        out += ["", "Tables (dead tuples / live tuples / total size with indexes, MiB):", ""]
        points = [("start", data["samples"][0])]
        points.append((f"{data['edge_s']:g} s", _near(data["samples"], data["edge_s"])))
        points.append(("end", data["samples"][-1]))
        points.append(("after release + VACUUM", data["after_vacuum"]))
        rows = []
        for table in data["samples"][0]["tables"]:
            cells = []
            for _, s in points:
                t = s["tables"].get(table)
                cells.append(
                    f"{t['dead']:,} / {t['live']:,} / {_mib(t['total_bytes'])}" if t else DASH
                )
            rows.append([table, *cells])
        out += _table(["table", *(label for label, _ in points)], rows)
        with_rss = [x for x in data["samples"] if x.get("rss_mib")]
        if with_rss:
            first, last = with_rss[0], with_rss[-1]
            out += [
                "",
                f"Resident memory of each process (MiB) at t = {first['t']:.0f} s and at the end "
                f"(t = {last['t']:.0f} s):",
                "",
            ]
            out += _table(
                ["process", "start", "end", "end / start"],
                [
                    _rss_row(name, mib, last["rss_mib"].get(name, 0.0))
                    for name, mib in first["rss_mib"].items()
                ],
            )
        out += ["", "Over time (latency of the jobs enqueued in the window ending at t):", ""]
        width = data["sample_s"]
        step = max(1, round(60 / width))
        header = ["t (s)", "p50", "p99", "CPU µs/job", "waiting"]
        header += [f"{t.split('_', 1)[-1]} dead / MiB" for t in data["samples"][0]["tables"]]
        rows = []
        for k, window in enumerate(data["windows"]):
            if (k + 1) % step and k != len(data["windows"]) - 1:
                continue
            s = _near(data["samples"], window["t"] + width)
            rows.append(
                [
                    f"{s['t']:.0f}",
                    f"{window['p50']:.2f}",
                    f"{window['p99']:.2f}",
                    _cpu_per_job(data, s),
                    str(s["waiting"]),
                    *(f"{v['dead']:,} / {_mib(v['total_bytes'])}" for v in s["tables"].values()),
                ]
            )
        out += _table(header, rows)
        for key, label in (
            ("start", "at the start (snapshot held, nothing processed yet)"),
            ("end", "at the end, snapshot still held"),
            ("released", "right after the long transaction ended"),
            ("released_again", "once more after that"),
        ):
            if data["plans"].get(key):
                out += [
                    "",
                    f"Claim of {SOAK_PLAN_LIMIT} jobs {label}, workers stopped, `EXPLAIN (ANALYZE, "
                    "BUFFERS)` in a transaction rolled back:",
                    "",
                    "```",
                    data["plans"][key],
                    "```",
                ]
    return out


def _rss_row(name: str, start: float, end: float) -> list[str]:
    return [name, f"{start:.1f}", f"{end:.1f}", f"{end / start:.2f}" if start else DASH]

"""``python -m benchmarks chart <results.json> <out.png>``: a run's jobs/s as a bar chart.

One group of bars per throughput scenario (single enqueue, bulk enqueue, pgjobs' bulk of one
class when measured, drain), one bar per system: the median of the runs, the error bar its
min-max, on a log scale (the systems differ by two orders of magnitude).  The Redis peers' bars
are hatched.  A dagger marks a value of which at least one run stopped at the time limit.
matplotlib is imported here only, when a chart is drawn (the ``bench`` extra brings it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SCENARIOS = (
    ("single", "single enqueue\n(one call per job)"),
    ("bulk", "bulk enqueue\n(batches of {batch:,})"),
    ("bulk_fast", "bulk, one class, no handles\n(pgjobs' perform_all_later_args)"),
    ("drain", "drain\n(best configuration)"),
)
COLORS = {
    "pgjobs": "#1f77b4",
    "procrastinate": "#9467bd",
    "pgqueuer": "#2ca02c",
    "celery": "#d62728",
    "dramatiq": "#ff7f0e",
    "rq": "#8c564b",
}
OTHER_COLORS = ("#17becf", "#bcbd22", "#7f7f7f", "#e377c2")


def draw(results: dict[str, Any], out: Path) -> None:
    """Write the chart of ``results`` (a results JSON, loaded) to ``out`` (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    systems: dict[str, Any] = results["systems"]
    options = results["options"]
    names = list(systems)
    shown = [(key, label) for key, label in SCENARIOS if any(systems[n].get(key) for n in names)]
    if not shown:
        raise SystemExit("benchmarks: no single, bulk or drain results to draw")

    fig, ax = plt.subplots(figsize=(11, 6))
    width = 0.84 / len(names)
    others = iter(OTHER_COLORS * 3)
    for j, name in enumerate(names):
        offset = (j - (len(names) - 1) / 2) * width
        xs, ys, below, above, marks = [], [], [], [], []
        for k, (key, _) in enumerate(shown):
            summary = systems[name].get(key)
            if not summary:
                continue
            median = float(summary["median"])
            xs.append(k + offset)
            ys.append(median)
            below.append(median - float(summary["min"]))
            above.append(float(summary["max"]) - median)
            marks.append("\u2020" if summary.get("time_limited") else "")
        redis = systems[name].get("store") == "redis"
        bars = ax.bar(
            xs,
            ys,
            width,
            yerr=[below, above],
            capsize=2,
            color=COLORS.get(name) or next(others),
            hatch="//" if redis else None,
            edgecolor="white" if redis else None,
            linewidth=0,
            label=f"{name} (Redis)" if redis else name,
            error_kw={"elinewidth": 0.8, "ecolor": "#333333"},
        )
        for bar, value, top, mark in zip(bars, ys, above, marks, strict=True):
            ax.annotate(
                f"{value:,.0f}{mark}",
                (bar.get_x() + bar.get_width() / 2, value + top),  # above the error bar
                xytext=(0, 3),
                textcoords="offset points",
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90,
            )

    ax.set_yscale("log")
    ax.set_ylabel("jobs/s (log scale)")
    ax.set_xticks(
        range(len(shown)), [label.format(batch=options.get("batch", 0)) for _, label in shown]
    )
    low, high = ax.get_ylim()
    ax.set_ylim(low, high * 4)  # room for the values above the bars
    ax.grid(axis="y", which="major", alpha=0.35)
    ax.grid(axis="y", which="minor", alpha=0.12)
    ax.set_axisbelow(True)
    ax.legend(ncols=min(len(names), 6), loc="upper left", fontsize=9, frameon=False)
    ax.set_title(
        f"No-op jobs/s, median of {options['repeat']} run{'s' if options['repeat'] != 1 else ''}"
        " (bars: min\u2013max), "
        f"{options['jobs']:,} jobs per run; {results['date'][:10]}",
        fontsize=11,
    )
    cores = results["machine"].get("cores")
    notes = [f"{cores}-core machine" if cores else "", "PostgreSQL systems: durable commits"]
    if any(systems[n].get("store") == "redis" for n in names):
        notes.append("Redis peers (hatched): Debian's redis.conf as shipped (RDB snapshots)")
    if any((systems[n].get(key) or {}).get("time_limited") for n in names for key, _ in shown):
        notes.append(f"\u2020 stopped at the {options['time_limit']:g} s time limit")
    fig.text(0.01, 0.005, "; ".join(n for n in notes if n), fontsize=8, color="#555555")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=130, bbox_inches="tight")
    plt.close(fig)

"""Results: the JSON document, the table printed after a run, and the charts."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

RESULTS_VERSION = 1


def load(path: Path) -> dict[str, Any]:
    results: dict[str, Any] = json.loads(path.read_text())
    if results.get("version") != RESULTS_VERSION:
        raise ValueError(f"{path}: not a results file of version {RESULTS_VERSION}")
    return results


def table(results: dict[str, Any]) -> str:
    """A fixed-width table: one line per scenario, the ceiling's figures beside the target's."""
    header = (
        f"{'scenario':<10} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
        f"{'max ms':>8} {'errors':>7} {'ceiling':>8} {'share':>6}"
    )
    lines = [header, "-" * len(header)]
    for scenario in results["scenarios"]:
        target = scenario["target"]
        latency = target["latency_ms"]
        ceiling = scenario.get("ceiling")
        share = scenario.get("share_of_ceiling")
        ceiling_rps = f"{ceiling['rps']:.0f}" if ceiling else "-"
        share_text = f"{share:.0%}" if share is not None else "-"
        lines.append(
            f"{scenario['name']:<10} {target['rps']:>8.0f} {latency['p50']:>8.1f} "
            f"{latency['p90']:>8.1f} {latency['p99']:>8.1f} {latency['max']:>8.1f} "
            f"{target['error_count']:>7} {ceiling_rps:>8} {share_text:>6}"
        )
        if scenario.get("note"):
            lines.append(f"{'':<10} ^ {scenario['note']}")
    return "\n".join(lines)


def _rps(stats: dict[str, Any]) -> float:
    return float(stats["rps"])


def _p99(stats: dict[str, Any]) -> float:
    return float(stats["latency_ms"]["p99"])


def scenario_chart(results: dict[str, Any], out: Path) -> None:
    """Throughput and p99 by scenario, the ceiling's bars beside the target's."""
    scenarios = results["scenarios"]
    names = [scenario["name"] for scenario in scenarios]
    positions = list(range(len(names)))
    width = 0.4
    figure = Figure(figsize=(11, 8), layout="constrained")
    rps_axis, p99_axis = figure.subplots(2, 1)
    panels = (
        (rps_axis, "requests/s", _rps, "{:.0f}"),
        (p99_axis, "p99 latency (ms)", _p99, "{:.1f}"),
    )
    for axis, label, metric, number in panels:
        target = [metric(scenario["target"]) for scenario in scenarios]
        ceiling = [metric(s["ceiling"]) if s.get("ceiling") else 0.0 for s in scenarios]
        bars = axis.bar(
            [x - width / 2 for x in positions], target, width, label=results["meta"]["target"]
        )
        axis.bar_label(bars, labels=[number.format(value) for value in target], fontsize="small")
        if any(ceiling):
            bars = axis.bar(
                [x + width / 2 for x in positions], ceiling, width, label="ceiling (from memory)"
            )
            axis.bar_label(
                bars,
                labels=[number.format(value) if value else "" for value in ceiling],
                fontsize="small",
            )
        axis.set_xticks(positions, names)
        axis.set_ylabel(f"{label}, log scale")
        # The ceiling is often tens of times the target: only a log scale shows both.
        axis.set_yscale("log")
        axis.legend(loc="upper right")
    meta = results["meta"]
    rps_axis.set_title(
        f"{meta['target']}: {meta['articles_count']} articles, {meta['connections']} connections, "
        f"{meta['duration_s']:g} s per scenario ({meta['started_at']})"
    )
    figure.savefig(out, dpi=110)


def size_chart(runs: Sequence[dict[str, Any]], out: Path) -> None:
    """Latency (p50 dashed, p99 solid) and throughput against the number of articles."""
    ordered = sorted(runs, key=lambda run: run["meta"]["articles_count"])
    sizes = [run["meta"]["articles_count"] for run in ordered]
    names = [scenario["name"] for scenario in ordered[0]["scenarios"]]
    figure = Figure(figsize=(13, 5.5), layout="constrained")
    latency_axis, rps_axis = figure.subplots(1, 2)
    for name in names:
        by_size = [
            next((s["target"] for s in run["scenarios"] if s["name"] == name), None)
            for run in ordered
        ]
        points = [(size, stats) for size, stats in zip(sizes, by_size, strict=True) if stats]
        xs = [size for size, _ in points]
        (line,) = latency_axis.plot(
            xs, [stats["latency_ms"]["p99"] for _, stats in points], marker="o", label=name
        )
        latency_axis.plot(
            xs,
            [stats["latency_ms"]["p50"] for _, stats in points],
            linestyle="--",
            color=line.get_color(),
        )
        rps_axis.plot(xs, [stats["rps"] for _, stats in points], marker="o", label=name)
    for axis, label in (
        (latency_axis, "latency (ms): p99 solid, p50 dashed"),
        (rps_axis, "requests/s"),
    ):
        axis.set_xscale("log")
        axis.set_xlabel("articles in the database")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    latency_axis.set_yscale("log")
    rps_axis.legend(loc="best", fontsize="small")
    figure.suptitle(f"{ordered[0]['meta']['target']}: latency and throughput against data size")
    figure.savefig(out, dpi=110)

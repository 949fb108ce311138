"""Results: the JSON document, the table printed after a run, and the charts."""

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
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
        f"{'scenario':<14} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} "
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
            f"{scenario['name']:<14} {target['rps']:>8.0f} {latency['p50']:>8.1f} "
            f"{latency['p90']:>8.1f} {latency['p99']:>8.1f} {latency['max']:>8.1f} "
            f"{target['error_count']:>7} {ceiling_rps:>8} {share_text:>6}"
        )
        if scenario.get("stream"):
            lines.append(f"{'':<14} ^ {_comparison(scenario)}")
        if scenario.get("note"):
            lines.append(f"{'':<14} ^ {scenario['note']}")
    return "\n".join(lines)


def _comparison(scenario: dict[str, Any]) -> str:
    stream, alone = scenario["stream"], scenario["alone"]
    rise = scenario.get("p99_rise")
    rise_text = f"{rise:+.0%}" if rise is not None else "-"
    return (
        f"beside {stream['rps']:.2f} {stream['kind']}/s (p99 {stream['latency_ms']['p99']:.0f} ms, "
        f"{stream['error_count']} errors); alone: {alone['rps']:.0f} req/s, "
        f"p99 {alone['latency_ms']['p99']:.1f} ms; p99 rise {rise_text}"
    )


def _rps(stats: dict[str, Any]) -> float:
    return float(stats["rps"])


def _p99(stats: dict[str, Any]) -> float:
    return float(stats["latency_ms"]["p99"])


def _count(number: int) -> str:
    for divisor, suffix in ((1_000_000, "M"), (1_000, "k")):
        if number >= divisor:
            return f"{number / divisor:.3g}{suffix}"
    return str(number)


def scenario_chart(results: dict[str, Any], out: Path) -> None:
    """Throughput and p99 by scenario, the ceiling's bars beside the target's."""
    meta = results["meta"]
    scenarios = results["scenarios"]
    names = [scenario["name"] for scenario in scenarios]
    positions = list(range(len(names)))
    width = 0.4
    figure = Figure(figsize=(11, 8.5), layout="constrained")
    rps_axis, p99_axis = figure.subplots(2, 1)
    panels = (
        (rps_axis, "requests/s", _rps, "{:.0f}"),
        (p99_axis, "p99 latency (ms)", _p99, "{:.1f}"),
    )
    for axis, label, metric, number in panels:
        target = [metric(scenario["target"]) for scenario in scenarios]
        ceiling = [metric(s["ceiling"]) if s.get("ceiling") else 0.0 for s in scenarios]
        bars = axis.bar([x - width / 2 for x in positions], target, width, label=meta["target"])
        axis.bar_label(
            bars, labels=[number.format(value) if value else "" for value in target], fontsize=7
        )
        bars = axis.bar(
            [x + width / 2 for x in positions], ceiling, width, label="ceiling (from memory)"
        )
        axis.bar_label(
            bars, labels=[number.format(value) if value else "" for value in ceiling], fontsize=7
        )
        axis.set_xticks(positions, names, rotation=30, ha="right")
        axis.set_ylabel(f"{label}, log scale")
        # The ceiling is often tens of times the target: only a log scale shows both.
        axis.set_yscale("log")
        axis.grid(True, axis="y", which="major", alpha=0.3)
    handles, labels = rps_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=2)
    figure.suptitle(
        f"{meta['target']}: {_count(meta['articles_count'])} articles, "
        f"{meta['connections']} connections, {meta['duration_s']:g} s per scenario "
        f"({meta['started_at']})"
    )
    figure.savefig(out, dpi=110)


def size_chart(
    runs: Sequence[dict[str, Any]], out: Path, scenarios: Sequence[str] | None = None
) -> None:
    """Latency (p99 solid, p50 dashed) and throughput against the number of articles."""
    ordered = sorted(runs, key=lambda run: run["meta"]["articles_count"])
    sizes = [run["meta"]["articles_count"] for run in ordered]
    names = [
        s["name"] for s in ordered[0]["scenarios"] if scenarios is None or s["name"] in scenarios
    ]
    figure = Figure(figsize=(13, 6), layout="constrained")
    latency_axis, rps_axis = figure.subplots(1, 2)
    palette = matplotlib.colormaps["tab20"]
    for index, name in enumerate(names):
        # tab20 pairs a dark and a light shade of each hue: the dark ones first, then the light.
        colour = palette((2 * index) % 20 + (2 * index) // 20 % 2)
        measured = [
            (size, stats)
            for size, run in zip(sizes, ordered, strict=True)
            for stats in [next((s["target"] for s in run["scenarios"] if s["name"] == name), None)]
            # A scenario that completed nothing has no latency to place on a log scale.
            if stats and stats["requests"]
        ]
        xs = [size for size, _ in measured]
        latency_axis.plot(
            xs,
            [st["latency_ms"]["p99"] for _, st in measured],
            marker="o",
            color=colour,
            label=name,
        )
        latency_axis.plot(
            xs, [st["latency_ms"]["p50"] for _, st in measured], linestyle="--", color=colour
        )
        rps_axis.plot(xs, [st["rps"] for _, st in measured], marker="o", color=colour, label=name)
    for axis, label in (
        (latency_axis, "latency (ms), log scale: p99 solid, p50 dashed"),
        (rps_axis, "requests/s, log scale"),
    ):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xticks(sizes, [_count(size) for size in sizes])
        axis.minorticks_off()
        axis.set_xlabel("articles in the database")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    handles, labels = rps_axis.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right center")
    figure.suptitle(f"{ordered[0]['meta']['target']}: latency and throughput against data size")
    figure.savefig(out, dpi=110)

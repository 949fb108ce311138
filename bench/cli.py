"""`python -m bench run URL` and `python -m bench chart RESULTS...`."""

import argparse
import asyncio
import json
import os
import platform
import random
import re
import secrets
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bench import ceiling, fixture, pools, report, wrk
from bench.scenarios import SCENARIOS, Scenario, Stream, select

PROBE_REQUESTS = 20


def duration(text: str) -> float:
    """Seconds from `20s`, `2m`, `1.5` or `0`."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m)?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (say 20s or 2m)")
    value = float(match[1])
    return value * {"ms": 0.001, "s": 1, "m": 60, None: 1}[match[2]]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Options:
    url: str
    out: Path
    scenarios: list[Scenario]
    load: wrk.Load
    duration_s: float
    warmup_s: float
    settle_s: float
    ceiling: bool
    pin_ceiling: int | None
    ceiling_workers: int
    reuse_fixture: Path | None
    fixture_users: int
    fixture_articles: int
    fixture_concurrency: int
    accounts: list[tuple[str, str]] = field(default_factory=list)


async def prepare(
    options: Options,
) -> tuple[fixture.Fixture, fixture.Survey, list[fixture.User]]:
    async with httpx.AsyncClient(base_url=options.url, timeout=60) as client:
        await fixture.preflight(client)
        if options.reuse_fixture is not None:
            made = fixture.Fixture.load(options.reuse_fixture)
            if await fixture.refresh_tokens(client, made, options.fixture_concurrency):
                say("fixture tokens had expired: logged the users in again")
        else:
            say(
                f"fixture: {options.fixture_users} users, {options.fixture_articles} articles "
                "with follows, comments and favorites"
            )
            made = await fixture.create(
                client,
                users=options.fixture_users,
                articles=options.fixture_articles,
                concurrency=options.fixture_concurrency,
            )
        readers = []
        if options.accounts:
            say(f"signing in {len(options.accounts)} existing accounts for the feed and logins")
            readers = await fixture.sign_in(
                client, options.accounts, concurrency=options.fixture_concurrency
            )
        return made, await fixture.survey(client), readers


def probe(client: httpx.Client, plan: pools.Plan, scenario: Scenario) -> Counter[int]:
    """Statuses of a few of the scenario's requests, sent once more to tell what failed."""
    rng = random.Random(4)
    nonce = secrets.token_hex(4)
    statuses: Counter[int] = Counter()
    kinds = list(scenario.weights)
    for counter in range(PROBE_REQUESTS):
        kind = rng.choice(kinds)
        if kind == "create":
            request = pools.create_article(plan, nonce, counter, rng)
        else:
            request = rng.choice(list(plan.pools[kind]))
        response = client.request(
            request.method, request.path, headers=request.headers(), content=request.body
        )
        statuses[response.status_code] += 1
    return statuses


def measure(
    url: str, options: Options, data: Path, raw: Path, scenario: Scenario, label: str = ""
) -> wrk.Stats:
    """The warm-up (when there is one), then the measured window."""
    windows = [(".warmup", options.warmup_s)] if options.warmup_s > 0 else []
    for suffix, seconds in [*windows, ("", options.duration_s)]:
        stats = wrk.run(
            url,
            data=data,
            scenario=scenario.name,
            out=raw / f"{scenario.name}{label}{suffix}.json",
            load=options.load,
            duration_s=seconds,
        )
    return stats


def measure_alongside(
    url: str, options: Options, data: Path, raw: Path, scenario: Scenario, stream: Stream
) -> tuple[wrk.Stats, dict[str, Any]]:
    """The scenario alone, then again with `stream` running through the warm-up and the
    measured window: the second run's stats, and how they compare with the first's."""
    alone = measure(url, options, data, raw, scenario, label=".alone")
    # One connection, on the load generator's core.
    stream_load = wrk.Load(
        connections=1, threads=1, timeout_s=options.load.timeout_s, pin=options.load.pin
    )
    running = wrk.start(
        url,
        data=data,
        scenario=scenario.stream_name,
        out=raw / f"{scenario.stream_name}.json",
        load=stream_load,
        duration_s=options.warmup_s + options.duration_s + 1,
        pause_s=stream.pause_s,
    )
    try:
        beside = measure(url, options, data, raw, scenario)
    finally:
        stream_stats = wrk.finish(running)
    alone_p99 = alone.latency_ms["p99"]
    comparison = {
        "alone": alone.to_json(),
        "stream": {
            "kind": stream.kind,
            "pause_s": stream.pause_s,
            **stream_stats.to_json(),
        },
        "p99_rise": round(beside.latency_ms["p99"] / alone_p99 - 1, 4) if alone_p99 else None,
    }
    return beside, comparison


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wrk_version() -> str:
    result = subprocess.run(  # noqa: S603
        [wrk.executable(), "--version"], capture_output=True, text=True, check=False
    )
    return (result.stdout or result.stderr).splitlines()[0].strip()


def target_scenario(
    client: httpx.Client,
    options: Options,
    plan: pools.Plan,
    data: Path,
    raw: Path,
    scenario: Scenario,
) -> dict[str, Any]:
    say(f"load: {scenario.name} ({scenario.description})")
    url = wrk.origin(options.url)
    entry: dict[str, Any] = {
        "name": scenario.name,
        "description": scenario.description,
        "read_only": scenario.read_only,
        "weights": dict(scenario.weights),
    }
    if scenario.alongside is None:
        stats = measure(url, options, data, raw, scenario)
    else:
        stats, comparison = measure_alongside(url, options, data, raw, scenario, scenario.alongside)
        entry |= comparison
    entry["target"] = stats.to_json()
    if stats.errors["status"]:
        statuses = probe(client, plan, scenario)
        entry["probe_statuses"] = {str(code): n for code, n in sorted(statuses.items())}
        entry["rate_limited"] = 429 in statuses
        entry["note"] = (
            fixture.RATE_LIMIT_HINT
            if 429 in statuses
            else f"{stats.errors['status']} HTTP errors; statuses of a probe: "
            + ", ".join(f"{code}: {n}" for code, n in sorted(statuses.items()))
        )
    elif not stats.requests:
        entry["note"] = "no request completed in the window: lengthen --duration"
    if "note" in entry:
        say(f"  {entry['note']}")
    return entry


def run_ceiling(
    client: httpx.Client,
    options: Options,
    plan: pools.Plan,
    data: Path,
    raw: Path,
    scenarios: list[dict[str, Any]],
) -> None:
    """The read scenarios once more, against the target's captured answers served from memory."""
    by_name = {entry["name"]: entry for entry in scenarios}
    kinds = sorted({kind for name in by_name for kind in SCENARIOS[name].weights})
    bodies = ceiling.capture(client, pools.read_requests(plan, kinds))
    bodies_file = options.out / "ceiling-bodies.json"
    bodies_file.write_text(json.dumps(bodies))
    port = free_port()
    say(f"ceiling: {len(bodies)} captured answers served from memory on port {port}")
    process = ceiling.start(
        bodies_file,
        port,
        pin=options.pin_ceiling,
        workers=options.ceiling_workers,
        log=options.out / "ceiling.log",
    )
    try:
        (raw / "ceiling").mkdir(exist_ok=True)
        for name, entry in by_name.items():
            say(f"ceiling load: {name}")
            stats = measure(
                f"http://127.0.0.1:{port}/", options, data, raw / "ceiling", SCENARIOS[name]
            )
            entry["ceiling"] = stats.to_json()
            if stats.rps:
                entry["share_of_ceiling"] = round(entry["target"]["rps"] / stats.rps, 4)
    finally:
        ceiling.stop(process)


def run(options: Options) -> dict[str, Any]:
    out = options.out
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    version = wrk_version()
    made, survey, readers = asyncio.run(prepare(options))
    raw = out / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    made.save(out / "fixture.json")
    plan = pools.build_plan(
        made, survey, prefix=urlsplit(options.url).path.rstrip("/"), readers=readers
    )
    chosen = [s for s in options.scenarios if all(plan.pools.get(k, True) for k in s.kinds)]
    skipped = [s.name for s in options.scenarios if s not in chosen]
    if skipped:
        say(f"skipped, the target gave nothing to build their requests from: {', '.join(skipped)}")
    data = out / "data.lua"
    data.write_text(pools.to_lua(plan, chosen))
    say(f"target holds {survey.articles_count} articles; fixture saved to {out / 'fixture.json'}")

    if options.settle_s > 0 and options.reuse_fixture is None:
        say(f"settle: {options.settle_s:g} s for the work the fixture set off in the background")
        time.sleep(options.settle_s)

    origin = wrk.origin(options.url)
    reads = [s for s in chosen if s.read_only]
    others = [s for s in chosen if not s.read_only]
    with httpx.Client(base_url=origin, timeout=30) as client:
        # Reads first, then the ceiling, then writes: writes leave background jobs behind that
        # would otherwise compete with the ceiling app for the server's core.
        scenarios = [target_scenario(client, options, plan, data, raw, s) for s in reads]
        if options.ceiling and reads:
            run_ceiling(client, options, plan, data, raw, scenarios)
        scenarios += [target_scenario(client, options, plan, data, raw, s) for s in others]

    results = {
        "version": report.RESULTS_VERSION,
        "meta": {
            "target": options.url,
            "started_at": started_at,
            "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "articles_count": survey.articles_count,
            "fixture": {
                "run": made.run,
                "users": len(made.users),
                "articles": len(made.articles),
                "reused": options.reuse_fixture is not None,
            },
            "connections": options.load.connections,
            "threads": options.load.threads,
            "timeout_s": options.load.timeout_s,
            "duration_s": options.duration_s,
            "warmup_s": options.warmup_s,
            "settle_s": options.settle_s,
            "pin_load": options.load.pin,
            "pin_ceiling": options.pin_ceiling,
            "ceiling_workers": options.ceiling_workers,
            "skipped_scenarios": skipped,
            "readers": len(readers) or len(made.users),
            "wrk": version,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "scenarios": scenarios,
    }
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    report.scenario_chart(results, out / "chart.png")
    return results


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    commands = main.add_subparsers(dest="command", required=True)

    run_command = commands.add_parser(
        "run", help="fixture, load per scenario, ceiling, results JSON and chart"
    )
    run_command.add_argument("url", help="the API root, e.g. http://127.0.0.1:8000/api")
    run_command.add_argument(
        "--out", type=Path, help="results folder (default: bench/results/DATE)"
    )
    run_command.add_argument(
        "--scenarios", help=f"comma-separated, default all: {','.join(SCENARIOS)}"
    )
    run_command.add_argument("--connections", type=int, default=32)
    run_command.add_argument("--threads", type=int, default=1)
    run_command.add_argument("--duration", type=duration, default=20.0, help="measured window")
    run_command.add_argument("--warmup", type=duration, default=5.0, help="0 for none")
    run_command.add_argument(
        "--settle",
        type=duration,
        default=5.0,
        help="pause after creating the fixture, for the background work it set off",
    )
    run_command.add_argument(
        "--timeout", type=duration, default=10.0, help="wrk's request timeout (counted as errors)"
    )
    run_command.add_argument("--pin-load", type=int, metavar="CPU", help="taskset wrk to a core")
    run_command.add_argument(
        "--pin-ceiling", type=int, metavar="CPU", help="taskset the ceiling app to a core"
    )
    run_command.add_argument("--ceiling", action=argparse.BooleanOptionalAction, default=True)
    run_command.add_argument(
        "--ceiling-workers",
        type=int,
        default=1,
        metavar="N",
        help="server processes of the ceiling app: as many as the target runs",
    )
    run_command.add_argument("--reuse-fixture", type=Path, metavar="FILE")
    run_command.add_argument("--fixture-users", type=int, default=20)
    run_command.add_argument("--fixture-articles", type=int, default=100)
    run_command.add_argument("--fixture-concurrency", type=int, default=8)
    run_command.add_argument(
        "--accounts",
        type=Path,
        metavar="FILE",
        help="existing accounts (`email [password]` a line) whose feeds and logins to load",
    )
    run_command.add_argument(
        "--accounts-password", help="the password of the --accounts lines that give none"
    )

    chart = commands.add_parser(
        "chart",
        help="chart of one results file, or latency against data size from several",
    )
    chart.add_argument("results", type=Path, nargs="+")
    chart.add_argument("--out", type=Path, required=True, help="PNG to write")
    chart.add_argument("--scenarios", help="comma-separated: only these in the size chart")
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        if args.command == "chart":
            runs = [report.load(path) for path in args.results]
            if len(runs) == 1:
                report.scenario_chart(runs[0], args.out)
            else:
                wanted = [s.name for s in select(args.scenarios)] if args.scenarios else None
                report.size_chart(runs, args.out, wanted)
            say(f"wrote {args.out}")
            return 0
        if args.connections < args.threads:
            raise SystemExit("--connections must be at least --threads")
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        options = Options(
            url=args.url.rstrip("/"),
            out=args.out or Path("bench") / "results" / stamp,
            scenarios=select(args.scenarios),
            load=wrk.Load(args.connections, args.threads, args.timeout, args.pin_load),
            duration_s=args.duration,
            warmup_s=args.warmup,
            settle_s=args.settle,
            ceiling=args.ceiling,
            pin_ceiling=args.pin_ceiling,
            ceiling_workers=args.ceiling_workers,
            reuse_fixture=args.reuse_fixture,
            fixture_users=args.fixture_users,
            fixture_articles=args.fixture_articles,
            fixture_concurrency=args.fixture_concurrency,
            accounts=(
                fixture.read_accounts(args.accounts, password=args.accounts_password)
                if args.accounts
                else []
            ),
        )
        results = run(options)
    except (fixture.FixtureError, wrk.WrkError, ValueError, httpx.HTTPError) as error:
        say(f"error: {error}")
        return 1
    print(report.table(results))
    say(f"wrote {options.out / 'results.json'} and {options.out / 'chart.png'}")
    return 0

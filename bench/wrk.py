"""Running wrk with the Lua driver, and reading what its done() wrote."""

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DRIVER = Path(__file__).parent / "lua" / "driver.lua"
SOCKET_ERRORS = ("connect", "read", "write", "timeout")


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Stats:
    requests: int
    duration_s: float
    rps: float
    bytes: int
    latency_ms: dict[str, float]
    errors: dict[str, int]

    @property
    def error_count(self) -> int:
        """HTTP statuses of 400 and above plus socket errors and timeouts."""
        return self.errors["status"] + sum(self.errors[name] for name in SOCKET_ERRORS)

    def to_json(self) -> dict[str, Any]:
        return asdict(self) | {"error_count": self.error_count}


def parse(text: str) -> Stats:
    """Stats from the driver's JSON; wrk measures in microseconds."""
    raw = json.loads(text)
    duration_s = raw["duration_us"] / 1e6
    latency = raw["latency_us"]
    return Stats(
        requests=raw["requests"],
        duration_s=round(duration_s, 3),
        rps=round(raw["requests"] / duration_s, 1) if duration_s > 0 else 0.0,
        bytes=raw["bytes"],
        latency_ms={
            name: round(latency[key] / 1000, 3)
            for name, key in (
                ("p50", "p50"),
                ("p90", "p90"),
                ("p95", "p95"),
                ("p99", "p99"),
                ("p99.9", "p99.9"),
                ("max", "max"),
                ("mean", "mean"),
            )
        },
        errors={name: int(raw["errors"][name]) for name in ("status", *SOCKET_ERRORS)},
    )


def executable() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise WrkError("wrk is not installed: apt-get update && apt-get install -y wrk")
    return found


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/"


@dataclass(frozen=True)
class Load:
    connections: int
    threads: int
    timeout_s: float
    pin: int | None


def command(url: str, load: Load, duration_s: float, program: str = "wrk") -> list[str]:
    args = [
        program,
        f"--threads={load.threads}",
        f"--connections={load.connections}",
        f"--duration={max(1, round(duration_s))}s",
        f"--timeout={load.timeout_s:g}s",
        f"--script={DRIVER}",
        origin(url),
    ]
    if load.pin is not None:
        args = ["taskset", "-c", str(load.pin), *args]
    return args


@dataclass
class Running:
    """A wrk run started in the background."""

    scenario: str
    out: Path
    process: subprocess.Popen[str]


def start(
    url: str,
    *,
    data: Path,
    scenario: str,
    out: Path,
    load: Load,
    duration_s: float,
    pause_s: float = 0.0,
) -> Running:
    """Start a wrk run of a scenario; `pause_s` makes each connection wait that long after
    every answer."""
    env = os.environ | {
        "BENCH_DATA": str(data),
        "BENCH_SCENARIO": scenario,
        "BENCH_OUT": str(out),
        # Keeps the titles the driver makes apart from those of every other run.
        "BENCH_NONCE": secrets.token_hex(4),
        "BENCH_PAUSE_MS": f"{pause_s * 1000:g}",
    }
    out.unlink(missing_ok=True)
    process = subprocess.Popen(  # noqa: S603
        command(url, load, duration_s, executable()),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Running(scenario, out, process)


def finish(running: Running) -> Stats:
    """Wait for a run; wrk's own report goes next to the JSON for reading later."""
    stdout, stderr = running.process.communicate()
    out = running.out
    out.with_suffix(".txt").write_text(stdout + stderr)
    if running.process.returncode != 0 or not out.exists():
        raise WrkError(
            f"wrk failed for {running.scenario} ({running.process.returncode}): {stderr[-500:]}"
        )
    return parse(out.read_text())


def run(url: str, *, data: Path, scenario: str, out: Path, load: Load, duration_s: float) -> Stats:
    """One wrk run of a scenario, waited for."""
    return finish(
        start(url, data=data, scenario=scenario, out=out, load=load, duration_s=duration_s)
    )

"""The ceiling reference: the target's read answers, captured once and served from memory by a
minimal ASGI app on the same server stack (granian, with as many server processes as the
target runs), so results read as a fraction of what the machine and the stack can do at all.

Run by the harness as `python -m bench.ceiling BODIES --port N --workers W`, optionally under
taskset.
"""

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import httpx
from granian import Granian
from granian.constants import Interfaces, Loops
from granian.log import LogLevels

from bench.pools import Request

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


def capture(client: httpx.Client, requests: Sequence[Request]) -> dict[str, str]:
    """Body of each distinct read path; a path's first token wins (feed pages differ by user)."""
    bodies: dict[str, str] = {}
    for request in requests:
        if request.path in bodies:
            continue
        response = client.get(request.path, headers=request.headers())
        if response.is_success:
            bodies[request.path] = response.text
    return bodies


def app(bodies: dict[str, bytes]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    missing = b'{"errors":{"path":["not captured"]}}'
    json_type = (b"content-type", b"application/json")

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["raw_path"].decode()
        if scope["query_string"]:
            path += "?" + scope["query_string"].decode()
        body = bodies.get(path)
        status = 200 if body is not None else 404
        body = body if body is not None else missing
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [json_type, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return serve


def start(
    bodies_file: Path, port: int, *, pin: int | None, workers: int, log: Path
) -> subprocess.Popen[bytes]:
    args = [
        sys.executable,
        "-m",
        "bench.ceiling",
        str(bodies_file),
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    if pin is not None:
        args = ["taskset", "-c", str(pin), *args]
    with log.open("wb") as output:
        process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT)  # noqa: S603
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the ceiling app exited with {process.returncode}; see {log}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return process
        except httpx.TransportError:
            time.sleep(0.2)
    stop(process)
    raise RuntimeError(f"the ceiling app did not answer within 30 s; see {log}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


BODIES_VARIABLE = "BENCH_CEILING_BODIES"


def served() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The app of a server process: the bodies named by BENCH_CEILING_BODIES, from memory."""
    raw: dict[str, str] = json.loads(Path(os.environ[BODIES_VARIABLE]).read_text())
    return app({path: body.encode() for path, body in raw.items()})


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve captured bodies from memory.")
    parser.add_argument("bodies", type=Path, help="JSON object: path and query -> body")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--workers", type=int, default=1)
    options = parser.parse_args()
    os.environ[BODIES_VARIABLE] = str(options.bodies.resolve())

    # The options Conduit's `conduit serve` runs granian with, so only the app differs.
    multiprocessing.set_start_method("spawn", force=True)
    Granian(
        f"bench.ceiling:{served.__name__}",
        factory=True,
        address=options.host,
        port=options.port,
        interface=Interfaces.ASGI,
        workers=options.workers,
        loop=Loops.uvloop,
        websockets=False,
        log_access=False,
        log_level=LogLevels.warning,
    ).serve()


if __name__ == "__main__":
    main()

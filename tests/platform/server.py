"""`conduit serve` in a child process, on a database of its own on the test server."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.conftest import drop_database, recreate_database

STARTUP_SECONDS = 60


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    database_url: str = ""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


def start(
    command: Sequence[str], port: int, log: Path, env: Mapping[str, str], cwd: Path | None = None
) -> Server:
    """A process whose stderr goes to `log`, not yet known to answer on `port`."""
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            list(command), env=dict(env), cwd=cwd, stdout=subprocess.DEVNULL, stderr=log_file
        )
    return Server(process, port, log)


def wait_until_answered(server: Server, path: str = "/health/ready") -> None:
    """Poll `path` until it answers 200; fail with the log if the process exits first."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{server.log.read_text()}")
        try:
            if httpx.get(f"{server.url}{path}", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{path} did not answer 200"
        time.sleep(0.2)


@contextmanager
def serving(
    server_url: str, data_dir: Path, *args: str, env: dict[str, str] | None = None
) -> Iterator[Server]:
    """A server on a fresh database (migrated on start), stopped with SIGTERM on exit."""
    name = f"conduit_serve_{os.getpid()}_{free_port()}"
    database_url = asyncio.run(recreate_database(server_url, name))
    port = free_port()
    environment = {
        **os.environ,
        "DATABASE_URL": database_url,
        "DATA_DIR": str(data_dir),
        "LOG_FORMAT": "json",
        **(env or {}),
    }
    command = [sys.executable, "-m", "conduit", "serve", "--port", str(port), *args]
    server = start(command, port, data_dir / "server.log", environment)
    server.database_url = database_url
    try:
        wait_until_answered(server)
        yield server
    finally:
        server.stop()
        asyncio.run(drop_database(server_url, name))

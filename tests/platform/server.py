"""`conduit serve` in a child process, on a database of its own on the test server."""

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)

    def log_lines(self) -> list[str]:
        return self.log.read_text().splitlines()


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
    log = data_dir / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "conduit", "serve", "--port", str(port), *args],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    server = Server(process, port, log)
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if process.poll() is not None:
                raise AssertionError(f"the server exited early:\n{log.read_text()}")
            try:
                if httpx.get(f"{server.url}/health/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the server did not become ready"
            time.sleep(0.2)
        yield server
    finally:
        server.stop()
        asyncio.run(drop_database(server_url, name))

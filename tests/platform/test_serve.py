"""`conduit serve` as a user runs it: a real process on the embedded default."""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conduit.cli import default_workers
from conduit.platform.settings import Settings

STARTUP_SECONDS = 60


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(data_dir: Path) -> Iterator[str]:
    port = _free_port()
    env = {key: value for key, value in os.environ.items() if key != "DATABASE_URL"}
    env["DATA_DIR"] = str(data_dir)
    process = subprocess.Popen(
        [sys.executable, "-m", "conduit", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base_url = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            try:
                httpx.get(f"{base_url}/tags", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        yield base_url
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)


def test_data_survives_a_restart_and_sigterm_stops_the_embedded_database(tmp_path: Path) -> None:
    user = {"username": "restart", "email": "restart@example.com", "password": "persistent"}
    with serving(tmp_path) as api:
        assert httpx.post(f"{api}/users", json={"user": user}).status_code == 201
        # On the embedded default the server runs the jobs itself: the welcome email arrives
        # in the mail folder without any other process.
        deadline = time.monotonic() + 15
        while not list((tmp_path / "mail").glob("*.eml")):
            assert time.monotonic() < deadline, "no welcome email was written"
            time.sleep(0.1)
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()

    with serving(tmp_path) as api:
        login = httpx.post(f"{api}/users/login", json={"user": user})
        assert login.status_code == 200
        token = login.json()["user"]["token"]
        # The signing key is kept in the data folder too, so tokens outlive a restart.
        me = httpx.get(f"{api}/user", headers={"Authorization": f"Token {token}"})
        assert me.status_code == 200
    assert not (tmp_path / "postgres" / "postmaster.pid").exists()


@pytest.mark.parametrize(
    ("environment", "redis_url", "expected"),
    [
        ("production", "redis://127.0.0.1:6379/0", os.cpu_count() or 1),
        ("production", None, 1),
        ("development", "redis://127.0.0.1:6379/0", 1),
    ],
)
def test_serve_defaults_to_a_process_per_cpu_only_in_production_with_redis(
    environment: str, redis_url: str | None, expected: int
) -> None:
    settings = Settings(
        environment=environment,
        redis_url=redis_url,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        jwt_secret="a-production-secret-that-is-long-enough-0123456789",
    )
    assert default_workers(settings) == expected

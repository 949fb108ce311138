"""SIGTERM on a real `conduit serve`: requests in flight finish within SHUTDOWN_GRACE_SECONDS,
new connections are refused, and a request that outlasts the grace period is cut off."""

import json
import signal
import socket
import time
from pathlib import Path

import httpx
import pytest

from tests.platform.server import Server, serving

BODY = b'{"user": {"email": "drain@example.com", "password": "whatever-it-is"}}'


def start_slow_request(server: Server) -> socket.socket:
    """A login whose body is only half sent, so the server holds it as in flight."""
    connection = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    head = (
        "POST /api/users/login HTTP/1.1\r\n"
        "Host: 127.0.0.1\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\n\r\n"
    ).encode()
    connection.sendall(head + BODY[:10])
    time.sleep(0.5)
    return connection


def test_sigterm_drains_requests_in_flight(server_url: str, tmp_path: Path) -> None:
    with serving(server_url, tmp_path, env={"SHUTDOWN_GRACE_SECONDS": "20"}) as server:
        connection = start_slow_request(server)
        server.process.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert server.process.poll() is None, "exited with a request in flight"
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{server.url}/health/live", timeout=2)

        connection.sendall(BODY[10:])
        status_line = connection.recv(4096).split(b"\r\n", 1)[0]
        connection.close()
        assert status_line == b"HTTP/1.1 401 Unauthorized"
        # A stop that drained everything is a clean exit.
        assert server.process.wait(timeout=30) == 0

    # Everything the process wrote, granian's and alembic's records included, is JSON lines.
    lines = [json.loads(line) for line in server.log_lines()]
    assert {"_granian", "alembic.runtime.migration"} <= {line["logger"] for line in lines}
    [drained] = [line for line in lines if line.get("route") == "/api/users/login"]
    assert drained["status"] == 401


def test_a_request_outlasting_the_grace_period_is_cut_off(server_url: str, tmp_path: Path) -> None:
    with serving(server_url, tmp_path, env={"SHUTDOWN_GRACE_SECONDS": "1"}) as server:
        connection = start_slow_request(server)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        waited = time.monotonic() - signalled
        assert 1 <= waited < 15
        answer = connection.recv(4096)
        connection.close()
        # The server process still serving it was stopped: the connection closes unanswered.
        assert answer == b""

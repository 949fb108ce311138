"""The notification stream over real HTTP, from real `conduit serve` processes: an endless
response cannot be read through an in-process transport, which waits for the whole body.

One server on its own (in-process live channel and worker), then two replicas sharing a
database and a Redis, where the jobs run on one and the stream is held open by the other.
"""

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from conduit.platform.db import migrations
from tests.conftest import TEST_JWT_SECRET, drop_database, recreate_database
from tests.helpers import PASSWORD, unique_name
from tests.notifications.sse import EventParser, ServerEvent
from tests.platform.server import STARTUP_SECONDS, Server, free_port, serving

# The brief for live delivery: a notification reaches an open stream within this long.
DELIVERY_SECONDS = 1.0


class Client:
    """A signed-in user of one server."""

    def __init__(self, server: Server, username: str | None = None) -> None:
        self.api = f"{server.url}/api"
        self.username = username or unique_name("live")
        user = {"username": self.username, "email": f"{self.username}@example.com"}
        response = httpx.post(f"{self.api}/users", json={"user": {**user, "password": PASSWORD}})
        assert response.status_code == 201, response.text
        self.token = response.json()["user"]["token"]

    def on(self, server: Server) -> "Client":
        """The same user, talking to another replica."""
        other = object.__new__(Client)
        other.api, other.username, other.token = f"{server.url}/api", self.username, self.token
        return other

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = httpx.request(method, f"{self.api}{path}", headers=self.headers, **kwargs)
        assert response.is_success, response.text
        return response

    def notifications(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.call("GET", "/notifications").json()["notifications"]
        return items

    @contextmanager
    def stream(self, last_event_id: int | None = None) -> Iterator["EventStream"]:
        headers = dict(self.headers)
        if last_event_id is not None:
            headers["Last-Event-ID"] = str(last_event_id)
        timeout = httpx.Timeout(10.0, read=5.0)
        with httpx.stream(
            "GET", f"{self.api}/notifications/stream", headers=headers, timeout=timeout
        ) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            yield EventStream(response)


class EventStream:
    def __init__(self, response: httpx.Response) -> None:
        self._lines = response.iter_lines()
        self._parser = EventParser()
        self.comments = 0

    def next(self) -> ServerEvent:
        """The next event, counting the keep-alive comments on the way."""
        for line in self._lines:
            event = self._parser.feed(line)
            if event is None:
                continue
            if event.is_comment:
                self.comments += 1
                continue
            return event
        raise AssertionError("the stream ended")

    def after(self, action: Callable[[], object]) -> ServerEvent:
        """Make an API call, then the next event: it must arrive within DELIVERY_SECONDS of
        the call, on the clock of the test rather than any server's."""
        started = time.monotonic()
        action()
        event = self.next()
        waited = time.monotonic() - started
        assert waited < DELIVERY_SECONDS, f"{event.event} took {waited:.2f}s"
        return event

    def ended(self) -> bool:
        return all(False for _ in self._lines)


def exits_soon(server: Server, seconds: float) -> int:
    try:
        return server.process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        server.process.kill()
        raise AssertionError(f"still running {seconds}s after SIGTERM") from None


def test_a_stream_receives_replays_and_ends_when_the_server_stops(
    server_url: str, tmp_path: Path
) -> None:
    env = {"NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS": "0.3", "SHUTDOWN_GRACE_SECONDS": "20"}
    with serving(server_url, tmp_path, "--worker", env=env) as server:
        celeb, fan, late_fan = Client(server), Client(server), Client(server)
        with celeb.stream() as events:
            ready = events.next()
            assert (ready.event, ready.json, ready.retry) == ("ready", {"unreadCount": 0}, 3000)
            followed = events.after(lambda: fan.call("POST", f"/profiles/{celeb.username}/follow"))
            [item] = celeb.notifications()
            assert (followed.event, followed.id) == ("notification", str(item["id"]))
            assert followed.json == {"notification": item}
            assert item["actor"]["username"] == fan.username

            mark_all = {"notifications": {"all": True}}
            read = events.after(lambda: celeb.call("POST", "/notifications/read", json=mark_all))
            assert (read.event, read.json) == ("read", {"ids": None, "unreadCount": 0})
            # Quiet for a while: keep-alive comments keep coming.
            time.sleep(0.8)
            events.after(lambda: late_fan.call("POST", f"/profiles/{celeb.username}/follow"))
            assert events.comments >= 2

        # What happens while no stream is open comes first on reconnection.
        missed_fan = Client(server)
        missed_fan.call("POST", f"/profiles/{celeb.username}/follow")
        deadline = time.monotonic() + 5
        while len(celeb.notifications()) < 3:
            assert time.monotonic() < deadline, "the follow was never notified"
            time.sleep(0.05)
        newest = celeb.notifications()[0]
        with celeb.stream(last_event_id=int(item["id"])) as events:
            assert events.next().json == {"unreadCount": 2}
            replayed = [events.next(), events.next()]
            assert [event.json["notification"]["actor"]["username"] for event in replayed] == [
                late_fan.username,
                missed_fan.username,
            ]
            assert replayed[-1].json == {"notification": newest}

            # The open stream does not hold the shutdown up: it ends, then the server exits.
            stopping = time.monotonic()
            server.process.send_signal(signal.SIGTERM)
            end = events.next()
            assert (end.event, end.json) == ("end", {"reason": "serverStopping"})
            assert events.ended()
            assert exits_soon(server, 10) == 0
            assert time.monotonic() - stopping < 5


@contextmanager
def replicas(
    server_url: str, data_dir: Path, env: dict[str, str], *worker_flags: str
) -> Iterator[list[Server]]:
    """One server process per flag, all on one fresh database, migrated beforehand so that
    they can start side by side."""
    name = f"conduit_replicas_{os.getpid()}_{free_port()}"
    database_url = asyncio.run(recreate_database(server_url, name))
    asyncio.run(migrations.upgrade(database_url))
    servers: list[Server] = []
    try:
        for index, flag in enumerate(worker_flags):
            folder = data_dir / f"replica{index}"
            folder.mkdir()
            environment = {**env, "DATABASE_URL": database_url, "MIGRATE_ON_START": "false"}
            servers.append(_start(folder, environment, flag))
        for server in servers:
            _wait_until_ready(server)
        yield servers
    finally:
        for server in servers:
            server.stop()
        asyncio.run(drop_database(server_url, name))


def _start(data_dir: Path, env: dict[str, str], *args: str) -> Server:
    port = free_port()
    environment = {**os.environ, "DATA_DIR": str(data_dir), "LOG_FORMAT": "json", **env}
    log = data_dir / "server.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [sys.executable, "-m", "conduit", "serve", "--port", str(port), *args],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    return Server(process, port, log)


def _wait_until_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        if server.process.poll() is not None:
            raise AssertionError(f"the server exited early:\n{server.log.read_text()}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the server did not become ready"
        time.sleep(0.1)


def test_replicas_sharing_redis_deliver_to_each_others_streams(
    server_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    env = {
        "REDIS_URL": redis_server_url,
        "REDIS_KEY_PREFIX": f"conduit-test-{uuid.uuid4().hex}:",
        # Shared, as in any deployment of replicas: each accepts the other's tokens.
        "JWT_SECRET": TEST_JWT_SECRET,
        "SHUTDOWN_GRACE_SECONDS": "20",
    }
    # Jobs run on the first replica only, so what the second streams came through Redis.
    with replicas(server_url, tmp_path, env, "--worker", "--no-worker") as (writer, reader):
        author, reader_fan = Client(writer), Client(writer)
        with author.on(reader).stream() as events:
            assert events.next().event == "ready"
            followed = events.after(
                lambda: reader_fan.call("POST", f"/profiles/{author.username}/follow")
            )
            assert followed.json["notification"]["kind"] == "follow"

            slug = author.call(
                "POST",
                "/articles",
                json={"article": {"title": "Replicated", "description": "d", "body": "b"}},
            ).json()["article"]["slug"]
            commented = events.after(
                lambda: reader_fan.call(
                    "POST", f"/articles/{slug}/comments", json={"comment": {"body": "Seen it"}}
                )
            )
            notification = commented.json["notification"]
            assert notification["kind"] == "comment"
            assert notification["comment"]["body"] == "Seen it"
            assert notification == author.on(reader).notifications()[0]

            # The fan's stream on the writer sees the author's next article, through Redis too.
            with reader_fan.stream() as fan_events:
                assert fan_events.next().event == "ready"
                published = fan_events.after(
                    lambda: author.on(reader).call(
                        "POST",
                        "/articles",
                        json={"article": {"title": "Second", "description": "d", "body": "b"}},
                    )
                )
                assert published.json["notification"]["article"]["title"] == "Second"

            # A replica stopping ends its streams at once, as with the in-process channel.
            reader.process.send_signal(signal.SIGTERM)
            assert events.next().json == {"reason": "serverStopping"}
            assert exits_soon(reader, 10) == 0

"""A real HTTP receiver for deliveries, and helpers to drive webhooks through the API.

The receiver is a threaded HTTP server on 127.0.0.1; deliveries reach it because these tests
allow private addresses (WEBHOOKS_ALLOW_PRIVATE_ADDRESSES), except where they test the refusal.
"""

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.settings import Settings
from tests.helpers import Account
from tests.jobs import JobRunner

ALL_EVENTS = [
    "article.deleted",
    "article.favorited",
    "article.published",
    "article.unfavorited",
    "article.updated",
    "comment.created",
    "comment.deleted",
    "user.followed",
    "user.registered",
    "user.unfollowed",
]


@dataclass(frozen=True)
class Reply:
    status: int = 200
    delay_seconds: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def signature_is_valid(self, secret: str) -> bool:
        """The receiver's side of the signing scheme, written from its documentation."""
        timestamp = self.headers["webhook-timestamp"]
        expected = hmac.new(
            secret.encode(), timestamp.encode() + b"." + self.body, hashlib.sha256
        ).hexdigest()
        return hmac.compare_digest(self.headers["webhook-signature"], f"v1={expected}")


class Receiver:
    """Answers POSTs with the replies planned for their path (200 once the plan runs out) and
    records every request it read."""

    def __init__(self) -> None:
        self.requests: list[Received] = []
        self._plans: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def plan(self, path: str, *replies: Reply | int) -> None:
        with self._lock:
            self._plans[path] = [
                reply if isinstance(reply, Reply) else Reply(reply) for reply in replies
            ]

    def received(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [request for request in self.requests if path is None or request.path == path]

    def _next_reply(self, path: str) -> Reply:
        with self._lock:
            plan = self._plans.get(path)
            return plan.pop(0) if plan else Reply()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver._lock:
                    receiver.requests.append(
                        Received(
                            self.path,
                            {name.lower(): value for name, value in self.headers.items()},
                            body,
                        )
                    )
                reply = receiver._next_reply(self.path)
                if reply.delay_seconds:
                    time.sleep(reply.delay_seconds)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    # The client gave up waiting (the timeout tests).
                    pass

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
async def empty_queue(session: AsyncSession) -> None:
    """Start from an empty queue: jobs another test committed to this database (and which this
    test's rolled-back transaction hides until it ends) would otherwise run here."""
    await session.execute(text("DELETE FROM pgqueuer WHERE status = 'queued'"))


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The suite's settings, letting deliveries reach the receiver on 127.0.0.1. Tests change
    webhook settings on this object, which the app and the job runner share."""
    settings.webhooks_allow_private_addresses = True
    return settings


async def create_webhook(
    client: httpx.AsyncClient,
    owner: Account,
    url: str,
    events: list[str] | None = None,
    **fields: Any,
) -> dict[str, Any]:
    response = await client.post(
        "/webhooks",
        json={"webhook": {"url": url, "events": events or ALL_EVENTS, **fields}},
        headers=owner.headers,
    )
    assert response.status_code == 201, response.text
    webhook: dict[str, Any] = response.json()["webhook"]
    return webhook


async def delivery_log(
    client: httpx.AsyncClient, owner: Account, webhook_id: int, **params: Any
) -> dict[str, Any]:
    response = await client.get(
        f"/webhooks/{webhook_id}/deliveries", params=params, headers=owner.headers
    )
    assert response.status_code == 200, response.text
    log: dict[str, Any] = response.json()
    return log


async def only_delivery(client: httpx.AsyncClient, owner: Account, webhook_id: int) -> Any:
    log = await delivery_log(client, owner, webhook_id)
    assert log["deliveriesCount"] == 1, log
    return log["deliveries"][0]


async def run_webhook_jobs(jobs: JobRunner) -> list[str]:
    """Run the due webhook jobs (and those they queue). Other features' jobs are dropped
    first: these tests are about webhooks, and must not depend on anything else's handlers."""
    await jobs.session.execute(
        text("DELETE FROM pgqueuer WHERE entrypoint NOT LIKE 'webhooks.%' AND status = 'queued'")
    )
    return await jobs.run_all()


async def make_retries_due(session: AsyncSession) -> int:
    """Bring the queued delivery attempts forward to now; how many there were."""
    result = await session.execute(
        text(
            "UPDATE pgqueuer SET execute_after = now() "
            "WHERE entrypoint = 'webhooks.deliver' AND status = 'queued' RETURNING id"
        )
    )
    return len(result.all())


async def queued_deliver_jobs(session: AsyncSession) -> list[dict[str, Any]]:
    result = await session.execute(
        text(
            "SELECT payload, execute_after > now() AS later FROM pgqueuer "
            "WHERE entrypoint = 'webhooks.deliver' AND status = 'queued' ORDER BY id"
        )
    )
    return [{**json.loads(payload), "later": later} for payload, later in result]

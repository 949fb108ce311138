"""Deliveries end to end: events published through the API, fanned out and POSTed by the real
handlers to a real HTTP receiver, which checks what it gets."""

import time
import uuid
from collections import Counter
from datetime import datetime

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.models import DomainEvent
from conduit.platform.jobs.registry import Event
from conduit.platform.settings import Settings
from conduit.users import service as users_service
from conduit.webhooks import handlers
from conduit.webhooks.models import WebhookDelivery, WebhookDestination
from tests.helpers import Account, create_article, errors, register
from tests.jobs import JobRunner
from tests.platform.server import free_port
from tests.webhooks.conftest import (
    Receiver,
    Reply,
    create_webhook,
    delivery_log,
    make_retries_due,
    only_delivery,
    queued_deliver_jobs,
    run_webhook_jobs,
)

pytestmark = pytest.mark.anyio


def parse_timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@pytest.fixture
async def author(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def fan(client: httpx.AsyncClient) -> Account:
    return await register(client)


async def comment(client: httpx.AsyncClient, account: Account, slug: str, body: str) -> int:
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=account.headers
    )
    assert response.status_code == 200, response.text
    comment_id: int = response.json()["comment"]["id"]
    return comment_id


async def test_a_delivery_is_signed_and_carries_public_facts(
    client: httpx.AsyncClient, author: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    webhook = await create_webhook(client, author, receiver.url())
    article = await create_article(client, author, title="Signed", tagList=["b", "a"])
    before = int(time.time())
    await run_webhook_jobs(jobs)

    [request] = receiver.received("/hook")
    delivery = await only_delivery(client, author, webhook["id"])
    assert request.headers["webhook-id"] == str(delivery["id"])
    assert request.headers["webhook-event"] == "article.published"
    assert request.headers["content-type"] == "application/json"
    assert before - 1 <= int(request.headers["webhook-timestamp"]) <= int(time.time()) + 1
    assert request.signature_is_valid(webhook["secret"])
    assert not request.signature_is_valid("whsec_someone-else")

    payload = request.json()
    assert set(payload) == {"id", "type", "occurredAt", "data"}
    assert payload["type"] == "article.published"
    assert payload["id"] == delivery["eventId"]
    assert parse_timestamp(payload["occurredAt"]).tzinfo is not None
    assert payload["data"] == {
        "article": {
            "slug": article["slug"],
            "title": "Signed",
            "description": article["description"],
            "tagList": ["a", "b"],
            "author": {"username": author.username},
        }
    }
    assert "@" not in request.body.decode()

    assert delivery["status"] == "delivered"
    assert delivery["eventType"] == "article.published"
    assert delivery["attempts"] == 1
    assert delivery["lastResponseStatus"] == 200
    assert delivery["lastError"] is None
    assert delivery["nextAttemptAt"] is None
    assert delivery["deliveredAt"] is not None


async def test_each_user_receives_the_events_that_concern_them(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    fan: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    admin = await register(client)
    await users_service.ensure_admin(session, email=admin.email, new_user=None)
    await session.commit()
    await create_webhook(client, author, receiver.url("/author"))
    await create_webhook(client, fan, receiver.url("/fan"))
    await create_webhook(client, admin, receiver.url("/admin"))
    await create_webhook(client, author, receiver.url("/comments"), events=["comment.created"])
    await create_webhook(client, author, receiver.url("/inactive"), active=False)
    # Registrations before the admin's endpoint existed are not sent to it; this one is.
    await register(client)

    article = await create_article(client, author)
    slug = article["slug"]
    assert (await client.post(f"/articles/{slug}/favorite", headers=fan.headers)).is_success
    comment_id = await comment(client, fan, slug, "Nice one")
    follow = await client.post(f"/profiles/{author.username}/follow", headers=fan.headers)
    assert follow.is_success
    fan_article = await create_article(client, fan)
    # The fan's own article: the author's endpoints must not hear of its favorite.
    favorite = await client.post(
        f"/articles/{fan_article['slug']}/favorite", headers=author.headers
    )
    assert favorite.is_success
    await run_webhook_jobs(jobs)

    def types(path: str) -> Counter[str]:
        return Counter(request.headers["webhook-event"] for request in receiver.received(path))

    assert types("/author") == Counter(
        ["article.published", "article.favorited", "comment.created", "user.followed"]
    )
    assert types("/fan") == Counter(["article.published", "article.favorited"])
    assert types("/comments") == Counter(["comment.created"])
    assert types("/inactive") == Counter()
    assert types("/admin") == Counter(
        {
            "user.registered": 1,
            "article.published": 2,
            "article.favorited": 2,
            "comment.created": 1,
            "user.followed": 1,
        }
    )

    by_type = {
        request.headers["webhook-event"]: request.json() for request in receiver.received("/author")
    }
    assert by_type["article.favorited"]["data"]["user"] == {"username": fan.username}
    assert by_type["article.favorited"]["data"]["article"]["slug"] == slug
    assert by_type["comment.created"]["data"]["comment"] == {
        "id": comment_id,
        "body": "Nice one",
        "author": {"username": fan.username},
    }
    assert by_type["comment.created"]["data"]["article"]["author"] == {"username": author.username}
    assert by_type["user.followed"]["data"] == {
        "follower": {"username": fan.username},
        "followee": {"username": author.username},
    }
    everything = b"".join(request.body for request in receiver.received())
    for account in (author, fan, admin):
        assert account.email.encode() not in everything


async def test_events_about_deleted_things_keep_what_is_known(
    client: httpx.AsyncClient, author: Account, fan: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    await create_webhook(
        client, author, receiver.url(), events=["article.deleted", "comment.deleted"]
    )
    article = await create_article(client, author)
    comment_id = await comment(client, fan, article["slug"], "Going soon")
    deleted = await client.delete(
        f"/articles/{article['slug']}/comments/{comment_id}", headers=fan.headers
    )
    assert deleted.status_code == 204
    await run_webhook_jobs(jobs)
    assert (await client.delete(f"/articles/{article['slug']}", headers=author.headers)).is_success
    await run_webhook_jobs(jobs)

    by_type = {request.headers["webhook-event"]: request.json() for request in receiver.received()}
    assert by_type["comment.deleted"]["data"]["comment"] == {
        "id": comment_id,
        "body": None,
        "author": {"username": fan.username},
    }
    assert by_type["comment.deleted"]["data"]["article"]["title"] == article["title"]
    assert by_type["article.deleted"]["data"]["article"] == {
        "slug": article["slug"],
        "title": None,
        "description": None,
        "tagList": None,
        "author": {"username": author.username},
    }


async def test_failures_are_retried_with_backoff_until_delivered(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    receiver.plan("/hook", 500, 503, 200)
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)

    delivery = await only_delivery(client, author, webhook["id"])
    assert delivery["status"] == "pending"
    assert delivery["attempts"] == 1
    assert delivery["lastResponseStatus"] == 500
    assert delivery["lastError"] == "HTTP 500"
    assert parse_timestamp(delivery["nextAttemptAt"]) > parse_timestamp(delivery["createdAt"])
    [retry] = await queued_deliver_jobs(session)
    assert retry["later"] is True
    # Not due yet: running the queue sends nothing.
    assert await run_webhook_jobs(jobs) == []
    assert len(receiver.received()) == 1

    assert await make_retries_due(session) == 1
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    assert (delivery["status"], delivery["attempts"], delivery["lastResponseStatus"]) == (
        "pending",
        2,
        503,
    )
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    assert delivery["status"] == "delivered"
    assert delivery["attempts"] == 3
    assert delivery["lastResponseStatus"] == 200
    assert delivery["nextAttemptAt"] is None
    assert await queued_deliver_jobs(session) == []

    requests = receiver.received()
    assert len(requests) == 3
    assert {request.headers["webhook-id"] for request in requests} == {str(delivery["id"])}
    assert {request.body for request in requests} == {requests[0].body}
    assert all(request.signature_is_valid(webhook["secret"]) for request in requests)


async def test_a_slow_endpoint_times_out_and_is_retried(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    settings.webhook_timeout_seconds = 0.3
    receiver.plan("/hook", Reply(200, delay_seconds=3))
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    started = time.monotonic()
    await run_webhook_jobs(jobs)
    assert time.monotonic() - started < 2

    delivery = await only_delivery(client, author, webhook["id"])
    assert delivery["status"] == "pending"
    assert delivery["attempts"] == 1
    assert delivery["lastError"] == "timed out after 0.3 s"
    assert delivery["lastResponseStatus"] is None

    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 2)


async def test_an_unreachable_endpoint_fails_fast(
    client: httpx.AsyncClient, author: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    # Nothing listens on a port just freed.
    webhook = await create_webhook(client, author, f"http://127.0.0.1:{free_port()}/hook")
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    assert delivery["status"] == "pending"
    assert delivery["lastError"].startswith("ConnectError")
    assert delivery["lastResponseStatus"] is None


async def test_redirects_are_not_followed(
    client: httpx.AsyncClient, author: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    receiver.plan("/hook", Reply(302, headers={"Location": receiver.url("/elsewhere")}))
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    assert (delivery["status"], delivery["lastError"]) == ("pending", "HTTP 302")
    assert [request.path for request in receiver.received()] == ["/hook"]


async def test_delivery_gives_up_after_the_last_attempt(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    settings.webhook_max_attempts = 3
    settings.webhook_breaker_failures = 100
    receiver.plan("/hook", *[500] * 10)
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    for _ in range(2):
        assert await make_retries_due(session) == 1
        await run_webhook_jobs(jobs)

    delivery = await only_delivery(client, author, webhook["id"])
    assert delivery["status"] == "failed"
    assert delivery["attempts"] == 3
    assert delivery["lastError"] == "HTTP 500"
    assert delivery["nextAttemptAt"] is None
    assert delivery["deliveredAt"] is None
    assert await queued_deliver_jobs(session) == []
    assert len(receiver.received()) == 3


async def open_until_past(session: AsyncSession) -> None:
    """Let the open period end now, rather than waiting for it."""
    await session.execute(
        text("UPDATE webhook_destination SET opened_until = clock_timestamp() - interval '1 s'")
    )


async def test_the_breaker_opens_after_consecutive_failures_and_one_success_closes_it(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    settings.webhook_breaker_failures = 2
    settings.webhook_breaker_open_seconds = 600
    receiver.plan("/hook", 500, 500, 500)
    healthy = Receiver()
    healthy.start()
    try:
        webhook = await create_webhook(client, author, receiver.url(), events=["article.published"])
        await create_webhook(client, author, healthy.url(), events=["article.published"])
        for _ in range(3):
            await create_article(client, author)
        await run_webhook_jobs(jobs)

        # Two failures opened the circuit: the third delivery did not touch the network.
        assert len(receiver.received()) == 2
        deliveries = (await delivery_log(client, author, webhook["id"]))["deliveries"]
        assert sorted(delivery["attempts"] for delivery in deliveries) == [0, 1, 1]
        [postponed] = [delivery for delivery in deliveries if delivery["attempts"] == 0]
        assert postponed["status"] == "pending"
        assert "paused" in postponed["lastError"]
        wait = parse_timestamp(postponed["nextAttemptAt"]) - parse_timestamp(postponed["createdAt"])
        assert wait.total_seconds() >= 590
        # Another destination is not held up by the failing one.
        assert len(healthy.received()) == 3
    finally:
        healthy.stop()
    destination = await session.get(WebhookDestination, f"127.0.0.1:{receiver.port}")
    assert destination is not None
    assert destination.consecutive_failures == 2

    # Still open: every attempt brought forward is postponed again, none is used up.
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    assert len(receiver.received()) == 2
    deliveries = (await delivery_log(client, author, webhook["id"]))["deliveries"]
    assert sorted(delivery["attempts"] for delivery in deliveries) == [0, 1, 1]

    # Half-open: one probe goes, fails (the third 500), and the circuit opens again.
    await open_until_past(session)
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    assert len(receiver.received()) == 3
    deliveries = (await delivery_log(client, author, webhook["id"]))["deliveries"]
    assert sorted(delivery["attempts"] for delivery in deliveries) == [0, 1, 2]

    # Half-open again: the probe succeeds, the circuit closes and the rest follow at once.
    await open_until_past(session)
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    assert len(receiver.received()) == 6
    deliveries = (await delivery_log(client, author, webhook["id"]))["deliveries"]
    assert {delivery["status"] for delivery in deliveries} == {"delivered"}
    assert sorted(delivery["attempts"] for delivery in deliveries) == [1, 2, 3]
    session.expire_all()
    assert await session.get(WebhookDestination, f"127.0.0.1:{receiver.port}") is None


async def test_a_success_resets_the_failure_count(
    client: httpx.AsyncClient,
    session: AsyncSession,
    settings: Settings,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    settings.webhook_breaker_failures = 2
    receiver.plan("/hook", 500, 200, 500)
    await create_webhook(client, author, receiver.url(), events=["article.published"])
    for _ in range(3):
        await create_article(client, author)
    await run_webhook_jobs(jobs)
    # Never two failures in a row: all three were sent, none postponed by the breaker, and
    # the success in between wiped the first failure out.
    assert len(receiver.received()) == 3
    [destination] = await session.scalars(select(WebhookDestination))
    assert destination.consecutive_failures == 1
    assert destination.opened_until is None


async def test_redelivery_sends_the_same_delivery_again(
    client: httpx.AsyncClient,
    author: Account,
    fan: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    assert delivery["status"] == "delivered"

    path = f"/webhooks/{webhook['id']}/deliveries/{delivery['id']}/redeliver"
    response = await client.post(path, headers=author.headers)
    assert response.status_code == 202, response.text
    redelivery = response.json()["delivery"]
    assert (redelivery["id"], redelivery["status"], redelivery["attempts"]) == (
        delivery["id"],
        "pending",
        0,
    )
    await run_webhook_jobs(jobs)
    first, second = receiver.received()
    assert second.headers["webhook-id"] == first.headers["webhook-id"] == str(delivery["id"])
    assert second.body == first.body
    assert second.signature_is_valid(webhook["secret"])
    delivery = await only_delivery(client, author, webhook["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)

    # Not for anyone else, and not to an inactive endpoint.
    assert (await client.post(path, headers=fan.headers)).status_code == 404
    missing = f"/webhooks/{webhook['id']}/deliveries/{delivery['id'] + 1000}/redeliver"
    assert (await client.post(missing, headers=author.headers)).status_code == 404
    await client.put(
        f"/webhooks/{webhook['id']}", json={"webhook": {"active": False}}, headers=author.headers
    )
    response = await client.post(path, headers=author.headers)
    assert response.status_code == 409
    assert "inactive" in errors(response)["webhook"][0]


async def test_redelivering_a_pending_delivery_supersedes_its_queued_attempt(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    receiver.plan("/hook", 500)
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    response = await client.post(
        f"/webhooks/{webhook['id']}/deliveries/{delivery['id']}/redeliver", headers=author.headers
    )
    assert response.status_code == 202
    assert len(await queued_deliver_jobs(session)) == 2
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    # The older, superseded attempt sent nothing.
    assert len(receiver.received()) == 2
    delivery = await only_delivery(client, author, webhook["id"])
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 1)


async def test_a_rotated_secret_signs_the_next_attempts(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    receiver.plan("/hook", 500)
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    response = await client.post(f"/webhooks/{webhook['id']}/rotate-secret", headers=author.headers)
    new_secret = response.json()["webhook"]["secret"]
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    first, second = receiver.received()
    assert first.signature_is_valid(webhook["secret"])
    assert second.signature_is_valid(new_secret)
    assert not second.signature_is_valid(webhook["secret"])


async def test_a_deactivated_endpoint_gets_nothing_more(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    receiver.plan("/hook", 500)
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    await client.put(
        f"/webhooks/{webhook['id']}", json={"webhook": {"active": False}}, headers=author.headers
    )
    await create_article(client, author)
    await make_retries_due(session)
    await run_webhook_jobs(jobs)
    assert len(receiver.received()) == 1
    delivery = await only_delivery(client, author, webhook["id"])
    assert (delivery["status"], delivery["lastError"]) == (
        "failed",
        "not sent: the endpoint is inactive",
    )


async def test_an_event_fanned_out_twice_is_delivered_once(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    webhook = await create_webhook(client, author, receiver.url(), events=["article.published"])
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    delivery = await only_delivery(client, author, webhook["id"])
    stored = await session.get(DomainEvent, uuid.UUID(delivery["eventId"]))
    assert stored is not None
    event = Event(id=stored.id, type=stored.type, occurred_at=stored.occurred_at, data=stored.data)
    context = JobContext(
        resources=jobs.resources,
        session=session,
        job_id=0,
        attempt=2,
        last_attempt=False,
    )
    await handlers.fan_out(context, event)
    assert await queued_deliver_jobs(session) == []
    count = await session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.event_id == event.id)
    )
    assert count == 1
    assert len(receiver.received()) == 1


async def test_a_queued_attempt_for_a_deleted_endpoint_does_nothing(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    receiver.plan("/hook", 500)
    webhook = await create_webhook(client, author, receiver.url())
    await create_article(client, author)
    await run_webhook_jobs(jobs)
    await client.delete(f"/webhooks/{webhook['id']}", headers=author.headers)
    await make_retries_due(session)
    assert await run_webhook_jobs(jobs) == ["webhooks.deliver"]
    assert len(receiver.received()) == 1


async def test_events_no_endpoint_receives_queue_no_fan_out(
    client: httpx.AsyncClient, author: Account, fan: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    slug = (await create_article(client, author))["slug"]
    assert "webhooks.fan_out" not in await jobs.queued()
    await create_webhook(client, fan, receiver.url(), events=["comment.created"])
    await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    assert "webhooks.fan_out" not in await jobs.queued()
    await comment(client, fan, slug, "Heard")
    assert (await jobs.queued()).count("webhooks.fan_out") == 1

"""The webhook API: registration and its validation, ownership, the secret shown once, and the
delivery log's pagination."""

from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.webhooks.models import WebhookDelivery
from tests.helpers import Account, create_article, errors, register
from tests.jobs import JobRunner
from tests.webhooks.conftest import (
    ALL_EVENTS,
    Receiver,
    create_webhook,
    delivery_log,
    run_webhook_jobs,
)

pytestmark = pytest.mark.anyio

WEBHOOK_KEYS = {"id", "url", "events", "active", "createdAt", "updatedAt"}
DELIVERY_KEYS = {
    "id",
    "eventId",
    "eventType",
    "status",
    "attempts",
    "lastError",
    "lastResponseStatus",
    "nextAttemptAt",
    "deliveredAt",
    "createdAt",
    "updatedAt",
}


@pytest.fixture
async def owner(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def stranger(client: httpx.AsyncClient) -> Account:
    return await register(client)


async def post_webhook(client: httpx.AsyncClient, account: Account, webhook: Any) -> httpx.Response:
    return await client.post("/webhooks", json={"webhook": webhook}, headers=account.headers)


async def test_creating_returns_the_secret_once(
    client: httpx.AsyncClient, owner: Account, receiver: Receiver
) -> None:
    response = await post_webhook(
        client,
        owner,
        {"url": receiver.url(), "events": ["comment.created", "article.published"] * 2},
    )
    assert response.status_code == 201, response.text
    created = response.json()["webhook"]
    assert set(created) == {*WEBHOOK_KEYS, "secret"}
    assert created["url"] == receiver.url()
    assert created["events"] == ["article.published", "comment.created"]
    assert created["active"] is True
    assert created["secret"].startswith("whsec_")
    assert len(created["secret"]) >= 40

    one = await client.get(f"/webhooks/{created['id']}", headers=owner.headers)
    assert one.status_code == 200
    assert one.json() == {"webhook": {key: created[key] for key in WEBHOOK_KEYS}}
    listing = await client.get("/webhooks", headers=owner.headers)
    assert listing.json() == {"webhooks": [one.json()["webhook"]]}
    assert created["secret"] not in one.text + listing.text


async def test_the_list_holds_only_the_callers_endpoints_newest_first(
    client: httpx.AsyncClient, owner: Account, stranger: Account, receiver: Receiver
) -> None:
    first = await create_webhook(client, owner, receiver.url("/1"))
    second = await create_webhook(client, owner, receiver.url("/2"), active=False)
    await create_webhook(client, stranger, receiver.url("/3"))
    response = await client.get("/webhooks", headers=owner.headers)
    assert [webhook["id"] for webhook in response.json()["webhooks"]] == [
        second["id"],
        first["id"],
    ]
    assert response.json()["webhooks"][0]["active"] is False


async def test_the_secret_never_reaches_the_logs(
    client: httpx.AsyncClient,
    owner: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    with structlog.testing.capture_logs() as logs:
        webhook = await create_webhook(client, owner, receiver.url())
        await create_article(client, owner)
        await run_webhook_jobs(jobs)
    assert len(receiver.received()) == 1
    assert webhook["secret"] not in repr(logs)


@pytest.mark.parametrize(
    ("webhook", "field", "message"),
    [
        ({"events": ["article.published"]}, "url", "can't be blank"),
        ({"url": "", "events": ["article.published"]}, "url", "can't be blank"),
        ({"url": "ftp://example.com/", "events": ["user.followed"]}, "url", "must be an http"),
        ({"url": "example.com/hook", "events": ["user.followed"]}, "url", "must be an http"),
        ({"url": "http:///path", "events": ["user.followed"]}, "url", "must name a host"),
        ({"url": "http://a:b@127.0.0.1/", "events": ["user.followed"]}, "url", "credentials"),
        ({"url": "http://127.0.0.1:99999/", "events": ["user.followed"]}, "url", "not a valid"),
        ({"url": "http://127.0.0.1:0/", "events": ["user.followed"]}, "url", "invalid port"),
        ({"url": "http://exa mple.com/", "events": ["user.followed"]}, "url", "not a valid"),
        ({"url": 42, "events": ["user.followed"]}, "url", "must be a string"),
        (
            {"url": "http://127.0.0.1/" + "a" * 2048, "events": ["user.followed"]},
            "url",
            "is too long",
        ),
        ({"url": "http://127.0.0.1/"}, "events", "can't be blank"),
        ({"url": "http://127.0.0.1/", "events": []}, "events", "at least one event type"),
        ({"url": "http://127.0.0.1/", "events": ["article.exploded"]}, "events", "unknown"),
        ({"url": "http://127.0.0.1/", "events": "user.followed"}, "events", "must be a list"),
        (
            {"url": "http://127.0.0.1/", "events": ["user.followed"], "active": "maybe"},
            "active",
            "must be true or false",
        ),
    ],
)
async def test_invalid_registrations_are_refused(
    client: httpx.AsyncClient, owner: Account, webhook: dict[str, Any], field: str, message: str
) -> None:
    response = await post_webhook(client, owner, webhook)
    assert response.status_code == 422, response.text
    assert any(message in text for text in errors(response)[field]), errors(response)


async def test_unknown_event_types_are_named(client: httpx.AsyncClient, owner: Account) -> None:
    response = await post_webhook(
        client, owner, {"url": "http://127.0.0.1/", "events": ["user.followed", "nope"]}
    )
    [message] = errors(response)["events"]
    assert "nope" in message
    assert "article.published" in message


async def test_without_a_token_everything_is_401(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/webhooks"),
        ("POST", "/webhooks"),
        ("GET", "/webhooks/1"),
        ("PUT", "/webhooks/1"),
        ("DELETE", "/webhooks/1"),
        ("POST", "/webhooks/1/rotate-secret"),
        ("GET", "/webhooks/1/deliveries"),
        ("GET", "/webhooks/1/deliveries/1"),
        ("POST", "/webhooks/1/deliveries/1/redeliver"),
    ]:
        body = {"webhook": {"url": "http://127.0.0.1/", "events": ["user.followed"]}}
        response = await client.request(method, path, json=body if method != "GET" else None)
        assert response.status_code == 401, (method, path, response.text)


async def test_someone_elses_endpoint_is_not_found(
    client: httpx.AsyncClient,
    owner: Account,
    stranger: Account,
    receiver: Receiver,
    jobs: JobRunner,
) -> None:
    webhook = await create_webhook(client, owner, receiver.url())
    await create_article(client, owner)
    await run_webhook_jobs(jobs)
    [delivery] = (await delivery_log(client, owner, webhook["id"]))["deliveries"]
    base = f"/webhooks/{webhook['id']}"
    for method, path, body in [
        ("GET", base, None),
        ("PUT", base, {"webhook": {"active": False}}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery['id']}", None),
        ("POST", f"{base}/deliveries/{delivery['id']}/redeliver", None),
    ]:
        response = await client.request(method, path, json=body, headers=stranger.headers)
        assert response.status_code == 404, (method, path, response.text)
        assert errors(response) == {"webhook": ["not found"]}
    # Nothing changed for the owner.
    response = await client.get(base, headers=owner.headers)
    assert response.json()["webhook"]["active"] is True
    assert (await delivery_log(client, owner, webhook["id"]))["deliveries"] == [delivery]


async def test_unknown_ids(client: httpx.AsyncClient, owner: Account, receiver: Receiver) -> None:
    response = await client.get("/webhooks/999999999", headers=owner.headers)
    assert response.status_code == 404
    webhook = await create_webhook(client, owner, receiver.url())
    response = await client.get(f"/webhooks/{webhook['id']}/deliveries/1", headers=owner.headers)
    assert response.status_code == 404
    assert errors(response) == {"delivery": ["not found"]}
    response = await client.get("/webhooks/0", headers=owner.headers)
    assert response.status_code == 422
    response = await client.get(f"/webhooks/{2**63}", headers=owner.headers)
    assert response.status_code == 422


async def test_updating_changes_only_the_fields_given(
    client: httpx.AsyncClient, owner: Account, receiver: Receiver
) -> None:
    webhook = await create_webhook(client, owner, receiver.url(), events=["user.followed"])
    path = f"/webhooks/{webhook['id']}"
    response = await client.put(
        path,
        json={"webhook": {"events": ["comment.created", "comment.deleted"], "active": False}},
        headers=owner.headers,
    )
    assert response.status_code == 200, response.text
    updated = response.json()["webhook"]
    assert updated["events"] == ["comment.created", "comment.deleted"]
    assert updated["active"] is False
    assert updated["url"] == receiver.url()
    assert "secret" not in updated

    response = await client.put(
        path, json={"webhook": {"url": receiver.url("/moved")}}, headers=owner.headers
    )
    assert response.json()["webhook"]["url"] == receiver.url("/moved")
    assert response.json()["webhook"]["active"] is False
    assert (await client.get(path, headers=owner.headers)).json() == response.json()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({}, "webhook"),
        ({"url": None, "events": None}, "webhook"),
        ({"events": []}, "events"),
        ({"url": "gopher://127.0.0.1/"}, "url"),
        ({"active": "no way"}, "active"),
    ],
)
async def test_invalid_updates_are_refused(
    client: httpx.AsyncClient,
    owner: Account,
    receiver: Receiver,
    change: dict[str, Any],
    field: str,
) -> None:
    webhook = await create_webhook(client, owner, receiver.url())
    response = await client.put(
        f"/webhooks/{webhook['id']}", json={"webhook": change}, headers=owner.headers
    )
    assert response.status_code == 422, response.text
    assert field in errors(response)
    unchanged = await client.get(f"/webhooks/{webhook['id']}", headers=owner.headers)
    assert unchanged.json()["webhook"] == {key: webhook[key] for key in WEBHOOK_KEYS}


async def test_deleting_removes_the_endpoint_and_its_log(
    client: httpx.AsyncClient,
    owner: Account,
    receiver: Receiver,
    jobs: JobRunner,
    session: AsyncSession,
) -> None:
    webhook = await create_webhook(client, owner, receiver.url())
    await create_article(client, owner)
    await run_webhook_jobs(jobs)
    response = await client.delete(f"/webhooks/{webhook['id']}", headers=owner.headers)
    assert response.status_code == 204
    assert (await client.get(f"/webhooks/{webhook['id']}", headers=owner.headers)).status_code == (
        404
    )
    remaining = await session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == webhook["id"])
    )
    assert remaining == 0


async def test_rotating_the_secret_shows_the_new_one_once(
    client: httpx.AsyncClient, owner: Account, receiver: Receiver
) -> None:
    webhook = await create_webhook(client, owner, receiver.url())
    response = await client.post(f"/webhooks/{webhook['id']}/rotate-secret", headers=owner.headers)
    assert response.status_code == 200, response.text
    rotated = response.json()["webhook"]
    assert rotated["secret"].startswith("whsec_")
    assert rotated["secret"] != webhook["secret"]
    shown = await client.get(f"/webhooks/{webhook['id']}", headers=owner.headers)
    assert "secret" not in shown.json()["webhook"]


async def test_a_user_may_register_twenty_endpoints(
    client: httpx.AsyncClient, owner: Account, receiver: Receiver
) -> None:
    for number in range(20):
        await create_webhook(client, owner, receiver.url(f"/{number}"))
    response = await post_webhook(
        client, owner, {"url": receiver.url("/one-too-many"), "events": ALL_EVENTS}
    )
    assert response.status_code == 422
    assert "at most 20" in errors(response)["webhook"][0]


async def test_the_delivery_log_is_paginated_newest_first(
    client: httpx.AsyncClient, owner: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    webhook = await create_webhook(client, owner, receiver.url(), events=["article.published"])
    slugs = [(await create_article(client, owner))["slug"] for _ in range(5)]
    await run_webhook_jobs(jobs)

    everything = await delivery_log(client, owner, webhook["id"])
    assert everything["deliveriesCount"] == 5
    deliveries = everything["deliveries"]
    assert all(set(delivery) == DELIVERY_KEYS for delivery in deliveries)
    assert [delivery["id"] for delivery in deliveries] == sorted(
        (delivery["id"] for delivery in deliveries), reverse=True
    )
    # Newest first: the last article published is the first delivery.
    sent = {request.headers["webhook-id"]: request.json() for request in receiver.received()}
    assert [sent[str(d["id"])]["data"]["article"]["slug"] for d in deliveries] == slugs[::-1]

    page = await delivery_log(client, owner, webhook["id"], limit=2, offset=0)
    assert page["deliveriesCount"] == 5
    assert page["deliveries"] == deliveries[:2]
    page = await delivery_log(client, owner, webhook["id"], limit=2, offset=2)
    assert page["deliveries"] == deliveries[2:4]
    page = await delivery_log(client, owner, webhook["id"], limit=2, offset=4)
    assert page["deliveries"] == deliveries[4:]
    page = await delivery_log(client, owner, webhook["id"], offset=10)
    assert page == {"deliveries": [], "deliveriesCount": 5}

    for params in ({"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "many"}):
        response = await client.get(
            f"/webhooks/{webhook['id']}/deliveries", params=params, headers=owner.headers
        )
        assert response.status_code == 422, (params, response.text)


async def test_one_delivery_shows_the_payload_sent(
    client: httpx.AsyncClient, owner: Account, receiver: Receiver, jobs: JobRunner
) -> None:
    webhook = await create_webhook(client, owner, receiver.url())
    await create_article(client, owner)
    await run_webhook_jobs(jobs)
    [summary] = (await delivery_log(client, owner, webhook["id"]))["deliveries"]
    response = await client.get(
        f"/webhooks/{webhook['id']}/deliveries/{summary['id']}", headers=owner.headers
    )
    assert response.status_code == 200, response.text
    delivery = response.json()["delivery"]
    assert {key: delivery[key] for key in DELIVERY_KEYS} == summary
    [request] = receiver.received()
    assert delivery["payload"] == request.json()

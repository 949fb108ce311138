"""The stream's events in process, on the app's live channel: what a client receives and when
the stream ends. The same stream over a real HTTP connection is tested in `test_server.py`."""

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.notifications import service, stream
from conduit.notifications.schemas import NotificationRead
from conduit.platform.live import InProcessLiveChannel, LiveChannel, Subscription
from conduit.users.models import User
from tests.helpers import PASSWORD, Account, follow, register
from tests.jobs import JobRunner
from tests.notifications.helpers import mark_read, notifications
from tests.notifications.sse import ServerEvent, parse

pytestmark = pytest.mark.anyio


async def next_event(body: AsyncIterator[bytes], seconds: float = 2.0) -> ServerEvent:
    async with asyncio.timeout(seconds):
        chunk = await anext(body)
    [event] = parse(chunk)
    return event


async def user_id(session: AsyncSession, account: Account) -> int:
    found = await session.scalar(select(User.id).where(User.username == account.username))
    assert found is not None
    return found


async def always() -> bool:
    return True


def open_stream(
    subscription: Subscription,
    *,
    unread_count: int = 0,
    missed: list[NotificationRead] | None = None,
    keepalive_seconds: float = 30.0,
    expires_in_seconds: float = 3600.0,
    still_authorised: Callable[[], Awaitable[bool]] = always,
    revalidate_seconds: float = stream.REVALIDATE_SECONDS,
) -> AsyncIterator[bytes]:
    return stream.events(
        subscription,
        unread_count=unread_count,
        missed=missed or [],
        keepalive_seconds=keepalive_seconds,
        expires_in_seconds=expires_in_seconds,
        still_authorised=still_authorised,
        revalidate_seconds=revalidate_seconds,
    )


async def test_ready_then_what_was_missed_then_live_ones_once_each(
    app: FastAPI, client: httpx.AsyncClient, jobs: JobRunner, session: AsyncSession
) -> None:
    celeb, fans = await register(client), [await register(client) for _ in range(3)]
    for fan in fans[:2]:
        await follow(client, fan, celeb)
    await jobs.run_all()
    celeb_id = await user_id(session, celeb)
    newest_first = await notifications(client, celeb)
    live: LiveChannel = app.state.live

    async with live.subscribe(service.topic(celeb_id)) as subscription:
        missed = await service.since(session, recipient_id=celeb_id, after_id=0)
        body = open_stream(subscription, unread_count=2, missed=missed)
        ready = await next_event(body)
        assert (ready.event, ready.json, ready.retry, ready.id) == (
            "ready",
            {"unreadCount": 2},
            3000,
            None,
        )
        for item in reversed(newest_first):
            replayed = await next_event(body)
            assert replayed.event == "notification"
            assert replayed.id == str(item["id"])
            assert replayed.json == {"notification": item}

        # Published live as well as replayed (it raced the reconnection): sent once.
        already = NotificationRead.model_validate(newest_first[0])
        await live.publish(service.topic(celeb_id), service.notification_message(already))
        await follow(client, fans[2], celeb)
        await jobs.run_all()
        fresh = await next_event(body)
        [newest, *_] = await notifications(client, celeb)
        assert fresh.id == str(newest["id"])
        assert fresh.json == {"notification": newest}
        assert newest["actor"]["username"] == fans[2].username


async def test_marking_read_elsewhere_is_announced(
    app: FastAPI, client: httpx.AsyncClient, jobs: JobRunner, session: AsyncSession
) -> None:
    celeb = await register(client)
    for _ in range(2):
        await follow(client, await register(client), celeb)
    await jobs.run_all()
    first, second = (item["id"] for item in await notifications(client, celeb))
    live: LiveChannel = app.state.live

    async with live.subscribe(service.topic(await user_id(session, celeb))) as subscription:
        body = open_stream(subscription)
        await next_event(body)
        assert await mark_read(client, celeb, {"ids": [second]}) == 1
        read = await next_event(body)
        assert (read.event, read.id) == ("read", None)
        assert read.json == {"ids": [second], "unreadCount": 1}

        # Nothing changed, nothing announced; "all" is announced with null ids.
        assert await mark_read(client, celeb, {"ids": [second]}) == 1
        assert await mark_read(client, celeb, {"all": True}) == 0
        read = await next_event(body)
        assert read.json == {"ids": None, "unreadCount": 0}
        assert first != second


async def test_sends_a_keep_alive_comment_after_each_quiet_period() -> None:
    live = stream_channel()
    async with live.subscribe("quiet") as subscription:
        body = open_stream(subscription, keepalive_seconds=0.1)
        await next_event(body)
        for _ in range(2):
            started = time.monotonic()
            keep_alive = await next_event(body, seconds=1.0)
            assert keep_alive.is_comment
            assert time.monotonic() - started >= 0.09
        # An event resets the clock: the next comment comes a full period after it.
        await live.publish("quiet", service.read_message(ids=None, unread_count=0))
        assert (await next_event(body)).event == "read"
        started = time.monotonic()
        assert (await next_event(body, seconds=1.0)).is_comment
        assert time.monotonic() - started >= 0.09
    await live.aclose()


async def test_ends_when_the_token_expires() -> None:
    live = stream_channel()
    async with live.subscribe("expiring") as subscription:
        started = time.monotonic()
        body = open_stream(subscription, keepalive_seconds=0.05, expires_in_seconds=0.3)
        events = [await next_event(body) for _ in range(2)]
        while events[-1].event != "end":
            events.append(await next_event(body))
        assert events[-1].json == {"reason": "tokenExpired"}
        assert 0.3 <= time.monotonic() - started < 1.0
        assert all(event.is_comment for event in events[1:-1])
        with pytest.raises(StopAsyncIteration):
            await anext(body)
    await live.aclose()


async def test_ends_when_the_server_stops() -> None:
    live = stream_channel()
    async with live.subscribe("stopping") as subscription:
        body = open_stream(subscription)
        await next_event(body)
        live.end_subscriptions()
        end = await next_event(body)
        assert (end.event, end.json) == ("end", {"reason": "serverStopping"})
    await live.aclose()


async def test_ends_once_the_token_is_revoked(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    """A password change revokes every access token: an open stream notices at its next
    check rather than streaming on for the token's lifetime."""
    account = await register(client)
    owner = await user_id(session, account)
    version = await session.scalar(select(User.token_version).where(User.id == owner))

    async def still_authorised() -> bool:
        current = await session.scalar(select(User.token_version).where(User.id == owner))
        return current == version

    live = stream_channel()
    async with live.subscribe("revoked") as subscription:
        body = open_stream(
            subscription,
            keepalive_seconds=0.05,
            still_authorised=still_authorised,
            revalidate_seconds=0.1,
        )
        assert (await next_event(body)).event == "ready"
        for _ in range(3):
            assert (await next_event(body)).is_comment
        changed = await client.put(
            "/user", json={"user": {"password": PASSWORD + " changed"}}, headers=account.headers
        )
        assert changed.status_code == 200
        events = [await next_event(body)]
        while events[-1].is_comment:
            events.append(await next_event(body))
        assert (events[-1].event, events[-1].json) == ("end", {"reason": "revoked"})
    await live.aclose()


def stream_channel() -> LiveChannel:
    return InProcessLiveChannel()

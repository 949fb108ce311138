"""The two ways a write asks for background work, both inside its own transaction.

`enqueue` adds a job; `publish` records a domain event and adds one job per subscribed handler.
Both run on the asyncpg connection under the caller's `AsyncSession`, so they commit or roll
back with the change that caused them. This module is the only one that knows the queue is
pgqueuer.
"""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries
from sqlalchemy import Executable, bindparam, insert, select, text, true
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.base import table_of
from conduit.platform.jobs.models import DomainEvent
from conduit.platform.jobs.registry import (
    EVENT_TYPES,
    Event,
    JsonObject,
    Subscription,
    registry,
)


async def _queries(session: AsyncSession) -> Queries:
    """pgqueuer's queries on the asyncpg connection under `session`, inside its transaction."""
    connection = await session.connection()
    raw = await connection.get_raw_connection()
    driver_connection: asyncpg.Connection[Any] = raw.driver_connection  # type: ignore[assignment]
    if not driver_connection.is_in_transaction():
        # SQLAlchemy's asyncpg adapter sends BEGIN with the first statement, not before: a job
        # added first, straight on the driver, would commit on its own, whatever happens next.
        await connection.execute(text("SELECT 1"))
    return Queries(AsyncpgDriver(driver_connection))


def encode(payload: JsonObject) -> bytes:
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def decode(payload: bytes | None) -> JsonObject:
    value = json.loads(payload or b"{}")
    if not isinstance(value, dict):
        raise ValueError("a job payload must be a JSON object")
    return value


async def enqueue(
    session: AsyncSession,
    name: str,
    payload: JsonObject,
    *,
    delay: timedelta | None = None,
    dedupe_key: str | None = None,
) -> None:
    """Add a job named `name` in the session's transaction.

    `dedupe_key` refuses a second live job with the same key (pgqueuer keeps the key unique
    among queued and running jobs), which callers use to make enqueueing idempotent.
    """
    if name not in registry.jobs and name not in registry.subscriptions:
        raise LookupError(f"no job named {name!r} is registered")
    queries = await _queries(session)
    await queries.enqueue(
        name, encode(payload), execute_after=delay, dedupe_key=dedupe_key, on_conflict="skip"
    )


async def publish(session: AsyncSession, event_type: str, **data: Any) -> Event:
    """Record that `event_type` happened, and queue each subscribed handler, in the session's
    transaction."""
    if event_type not in EVENT_TYPES:
        raise LookupError(f"unknown event type {event_type!r}")
    event = Event(id=uuid.uuid4(), type=event_type, occurred_at=datetime.now(UTC), data=data)
    subscribers = tuple(registry.subscribers_of(event_type))
    recorded = {
        "event_id": event.id,
        "event_type": event.type,
        "event_data": event.data,
        "event_occurred_at": event.occurred_at,
    }
    result = await session.execute(_recording(event_type, subscribers), recorded)
    answers = result.one() if subscribers else ()
    names = [
        subscriber.name for subscriber, wanted in zip(subscribers, answers, strict=True) if wanted
    ]
    if names:
        queries = await _queries(session)
        body = encode(event.to_json())
        await queries.enqueue(
            names,
            [body] * len(names),
            [0] * len(names),
            dedupe_key=[handling_key(event.id, name) for name in names],
        )
    return event


@functools.cache
def _recording(event_type: str, subscribers: tuple[Subscription, ...]) -> Executable:
    """One statement that records an event of `event_type` and answers, for each subscriber,
    whether to queue it (the audience's condition, or true); the insert alone for none."""
    events = table_of(DomainEvent)
    record = insert(events).values(
        id=bindparam("event_id", type_=events.c.id.type),
        type=bindparam("event_type", type_=events.c.type.type),
        data=bindparam("event_data", type_=events.c.data.type),
        occurred_at=bindparam("event_occurred_at", type_=events.c.occurred_at.type),
    )
    if not subscribers:
        return record
    answers = [
        true() if subscriber.audience is None else subscriber.audience(event_type)
        for subscriber in subscribers
    ]
    # PostgreSQL runs a data-modifying WITH whether or not the query reads it.
    return select(*answers).add_cte(record.cte("recorded"))


def handling_key(event_id: uuid.UUID, handler: str) -> str:
    return f"{event_id}:{handler}"

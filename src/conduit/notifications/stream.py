"""A user's notifications as they happen, as server-sent events, and the publishing side that
feeds them.

The stream, once open:

```text
event: ready
data: {"unreadCount":2}
retry: 3000

event: notification
data: {"notification":{...one item, exactly as GET /api/notifications lists it...}}
id: 42

event: read
data: {"ids":[40,42],"unreadCount":0}

: keep-alive

event: end
data: {"reason":"serverStopping"}
```

- `ready` comes first, once the stream listens: what is published from then on is delivered.
  Its `unreadCount` is the count at that moment.
- `notification` carries its id as the event id, so a client that reconnects with
  `Last-Event-ID` first receives what it missed (the newest 100 at most, oldest first),
  then live ones; a notification may arrive twice around a reconnection, so clients keep them
  by id.
- `read` follows a `POST /api/notifications/read` from any client of the same user: `ids` are
  those that changed, or null when everything was marked read.
- A comment line comes after every `NOTIFICATIONS_STREAM_KEEPALIVE_SECONDS` without an event,
  so that proxies do not take the stream for idle.
- `end` comes last when the server ends the stream: `serverStopping` (reconnect, another
  replica answers), `tokenExpired` (reconnect with a fresh token) or `revoked` (the access
  token was revoked or the account suspended; sign in again).
"""

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from enum import StrEnum

import structlog
from fastapi.sse import format_sse_event
from redis.exceptions import RedisError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.notifications.schemas import NotificationEnvelope, NotificationRead
from conduit.platform.db.session import after_commit
from conduit.platform.live import LiveChannel, Subscription, SubscriptionEnded

logger = structlog.stdlib.get_logger(__name__)

# How long a client waits before reconnecting after the stream ends.
RETRY_MILLISECONDS = 3_000
# How often an open stream checks that its token still stands: a revoked token or a
# suspended account stops streaming within this long, at the cost of one query per period.
REVALIDATE_SECONDS = 60.0


class EndReason(StrEnum):
    server_stopping = "serverStopping"
    token_expired = "tokenExpired"  # noqa: S105 (a reason, not a secret)
    revoked = "revoked"


def publish_after_commit(
    session: AsyncSession, live: LiveChannel, messages: Sequence[tuple[str, str]]
) -> None:
    """Publish live messages once `session` has committed, and never if it rolls back."""
    if not messages:
        return

    async def publish() -> None:
        try:
            await live.publish_many(messages)
        except (RedisError, OSError) as error:
            # Committed already: the streams that missed it see it in the list on reload.
            logger.warning("live notifications not published", error=repr(error))

    after_commit(session, publish)


def _data(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _end(reason: EndReason) -> bytes:
    return format_sse_event(event="end", data_str=_data({"reason": reason.value}))


def _notification(item: NotificationRead) -> bytes:
    return format_sse_event(
        event="notification",
        id=str(item.id),
        data_str=NotificationEnvelope(notification=item).model_dump_json(),
    )


def _from_live(message: str) -> tuple[bytes, int | None]:
    """A live message as an event, with its notification id if it has one."""
    decoded = json.loads(message)
    event_id = decoded.get("id")
    event = format_sse_event(
        event=decoded["event"],
        id=None if event_id is None else str(event_id),
        data_str=_data(decoded["data"]),
    )
    return event, event_id


async def events(
    subscription: Subscription,
    *,
    unread_count: int,
    missed: Sequence[NotificationRead],
    keepalive_seconds: float,
    expires_in_seconds: float,
    still_authorised: Callable[[], Awaitable[bool]],
    revalidate_seconds: float = REVALIDATE_SECONDS,
) -> AsyncIterator[bytes]:
    """The stream's body, until the channel ends the subscription, the token expires or it no
    longer stands; cancelled when the client goes away."""
    clock = time.monotonic
    yield format_sse_event(
        event="ready", data_str=_data({"unreadCount": unread_count}), retry=RETRY_MILLISECONDS
    )
    replayed = set()
    for item in missed:
        yield _notification(item)
        replayed.add(item.id)
    now = clock()
    expires_at = now + expires_in_seconds
    next_check = now + revalidate_seconds
    last_sent = now
    while True:
        now = clock()
        if now >= expires_at:
            yield _end(EndReason.token_expired)
            return
        if now >= next_check:
            if not await still_authorised():
                yield _end(EndReason.revoked)
                return
            next_check = now + revalidate_seconds
        if now - last_sent >= keepalive_seconds:
            yield format_sse_event(comment="keep-alive")
            last_sent = now
        wait = min(last_sent + keepalive_seconds, expires_at, next_check) - now
        try:
            async with asyncio.timeout(max(wait, 0.0)):
                message = await subscription.next()
        except TimeoutError:
            continue
        except SubscriptionEnded:
            yield _end(EndReason.server_stopping)
            return
        try:
            event, event_id = _from_live(message)
        except (ValueError, KeyError, TypeError):
            logger.warning("malformed live message dropped", message=message[:200])
            continue
        if event_id in replayed:
            continue
        yield event
        last_sent = clock()

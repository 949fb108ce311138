import time
from collections.abc import AsyncIterator
from typing import Annotated

import jwt
from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conduit.notifications import service, stream
from conduit.notifications.schemas import (
    MAX_NOTIFICATION_ID,
    MarkReadEnvelope,
    NotificationList,
    UnreadCount,
)
from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.errors import ValidationFailed
from conduit.platform.live import LiveChannel, Subscription
from conduit.platform.security import JWT_ALGORITHM
from conduit.users.dependencies import AccessToken, CurrentUser
from conduit.users.models import User

router = APIRouter(route_class=AutoCommitRoute, tags=["Notifications"])

MAX_OFFSET = 2**31 - 1
Limit = Annotated[
    int, Query(ge=1, description="Number of notifications to return (at most MAX_PAGE_SIZE)")
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Number of notifications to skip")]
LastEventId = Annotated[
    int | None,
    Header(
        alias="Last-Event-ID",
        ge=0,
        le=MAX_NOTIFICATION_ID,
        description="The id of the last notification received, to receive those missed since.",
    ),
]


def _limit(request: Request, limit: int) -> int:
    maximum: int = request.app.state.settings.max_page_size
    if limit > maximum:
        raise ValidationFailed(f"must be less than or equal to {maximum}", field="limit")
    return limit


def _live(request: Request) -> LiveChannel:
    live: LiveChannel = request.app.state.live
    return live


@router.get("/notifications", summary="Your notifications, newest first")
async def list_notifications(
    request: Request, session: SessionDep, user: CurrentUser, limit: Limit = 20, offset: Offset = 0
) -> NotificationList:
    return await service.page(
        session, recipient_id=user.id, limit=_limit(request, limit), offset=offset
    )


@router.post("/notifications/read", summary="Mark some or all of your notifications read")
async def mark_read(
    request: Request, body: MarkReadEnvelope, session: SessionDep, user: CurrentUser
) -> UnreadCount:
    changed, unread = await service.mark_read(
        session, recipient_id=user.id, ids=body.notifications.ids
    )
    if changed is None or changed:
        # The user's other open streams (other tabs, other devices) update their badges.
        message = service.read_message(ids=changed, unread_count=unread)
        stream.publish_after_commit(session, _live(request), [(service.topic(user.id), message)])
    return UnreadCount(unread_count=unread)


async def _subscription(request: Request, user: CurrentUser) -> AsyncIterator[Subscription]:
    # A dependency, so that it is listening before the endpoint reads what was missed (nothing
    # falls between the two), and stops listening only once the response is over.
    async with _live(request).subscribe(service.topic(user.id)) as subscription:
        yield subscription


def _seconds_left(request: Request, token: str) -> float:
    """How long the caller's access token (already verified for this request) stays valid."""
    claims = jwt.decode(token, request.app.state.jwt_secret, algorithms=[JWT_ALGORITHM])
    return float(claims["exp"]) - time.time()


class EventStream(StreamingResponse):
    """A `text/event-stream` response whose body is already in the wire format.

    Not FastAPI's `EventSourceResponse`: as a route's response class, that one makes FastAPI
    expect a generator endpoint, whose keep-alive interval is fixed at 15 seconds and whose
    body starts before the route can answer an error; this route answers its errors first and
    keeps its own interval.
    """

    media_type = "text/event-stream"


@router.get(
    "/notifications/stream",
    summary="Your new notifications as they happen (server-sent events)",
    response_class=EventStream,
    responses={
        200: {
            "description": "An endless `text/event-stream`: `ready`, then `notification` and "
            "`read` events as they happen, keep-alive comments, and `end` when the server "
            "ends the stream.",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    },
)
async def stream_notifications(
    request: Request,
    session: SessionDep,
    user: CurrentUser,
    token: AccessToken,
    subscription: Annotated[Subscription, Depends(_subscription)],
    last_event_id: LastEventId = None,
) -> EventStream:
    missed = []
    if last_event_id is not None:
        missed = await service.since(session, recipient_id=user.id, after_id=last_event_id)
    unread = await service.unread_count(session, recipient_id=user.id)
    user_id, token_version = user.id, user.token_version

    async def still_authorised() -> bool:
        # A short session of its own: the stream holds no connection while it waits.
        sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
        async with sessionmaker() as check:
            row = (
                await check.execute(
                    select(User.token_version, User.suspended_at).where(User.id == user_id)
                )
            ).one_or_none()
        return row is not None and row.token_version == token_version and row.suspended_at is None

    body = stream.events(
        subscription,
        unread_count=unread,
        missed=missed,
        keepalive_seconds=request.app.state.settings.notifications_stream_keepalive_seconds,
        expires_in_seconds=_seconds_left(request, token),
        still_authorised=still_authorised,
    )
    # The route commits the request's read-only transaction as this returns, which hands its
    # connection back to the pool before the stream starts.
    # No caching, and no buffering by proxies that honour X-Accel-Buffering (nginx).
    return EventStream(body, headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

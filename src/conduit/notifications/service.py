"""Notifications: written by the event handlers, one row per recipient, each in a single
INSERT ... SELECT that reads the current state of what the event names, so that nothing is
written for an article, comment or follow that is gone by the time the handler runs; read a
page at a time by their recipient; marked read by their recipient only.

Each write returns the live messages that announce it, for the caller to publish once its
transaction has committed (see `handlers`). A live message is JSON:
`{"event": "notification", "id": <id>, "data": {"notification": {...}}}` or
`{"event": "read", "data": {"ids": [...] | null, "unreadCount": n}}`; the stream turns each into
a server-sent event.
"""

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Row,
    Select,
    and_,
    bindparam,
    exists,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from conduit.articles.models import Article, Favorite
from conduit.comments.models import Comment
from conduit.notifications.models import Kind, Notification
from conduit.notifications.schemas import (
    NotificationArticle,
    NotificationComment,
    NotificationList,
    NotificationRead,
)
from conduit.platform.db.base import table_of
from conduit.profiles.models import Follow
from conduit.profiles.schemas import ProfileRead
from conduit.users.models import User

# What a reconnecting stream replays at most; a client that missed more reads the list.
REPLAY_LIMIT = 100

LiveMessage = tuple[str, str]


def topic(user_id: int) -> str:
    """The live channel's topic for one user's notifications."""
    return f"notifications:{user_id}"


def _encode(message: dict[str, Any]) -> str:
    return json.dumps(message, separators=(",", ":"))


def notification_message(item: NotificationRead) -> str:
    return _encode(
        {
            "event": "notification",
            "id": item.id,
            "data": {"notification": item.model_dump(mode="json")},
        }
    )


def read_message(*, ids: Sequence[int] | None, unread_count: int) -> str:
    return _encode(
        {
            "event": "read",
            "data": {"ids": None if ids is None else list(ids), "unreadCount": unread_count},
        }
    )


# Reads


def _items_statement() -> Select[*tuple[Any, ...]]:
    """A recipient's notifications as the API shows them, in one statement: the actor (with
    whether the recipient follows them), the article and the comment joined. Its
    `recipient_id` is a bound parameter."""
    actor = aliased(User)
    recipient_id = bindparam("recipient_id", type_=BigInteger)
    following = exists().where(
        Follow.follower_id == recipient_id, Follow.followee_id == Notification.actor_id
    )
    return (
        select(
            Notification.id,
            Notification.kind,
            Notification.created_at,
            Notification.read_at,
            actor.username,
            actor.bio,
            actor.image,
            following.label("following"),
            Article.slug,
            Article.title,
            Comment.id.label("comment_id"),
            Comment.body,
        )
        .join(actor, actor.id == Notification.actor_id)
        .outerjoin(Article, Article.id == Notification.article_id)
        .outerjoin(Comment, Comment.id == Notification.comment_id)
        .where(Notification.recipient_id == recipient_id)
    )


# Built once: the aliased actor makes building it cost more than running it, and a worker
# builds one for every notification it announces.
_ITEMS = _items_statement()
_ITEM = _ITEMS.where(Notification.id == bindparam("notification_id", type_=BigInteger))


def _to_read(row: Row[*tuple[Any, ...]]) -> NotificationRead:
    return NotificationRead(
        id=row.id,
        kind=row.kind,
        created_at=row.created_at,
        read=row.read_at is not None,
        actor=ProfileRead(
            username=row.username,
            bio=row.bio,
            image=row.image or "",
            following=bool(row.following),
        ),
        article=None if row.slug is None else NotificationArticle(slug=row.slug, title=row.title),
        comment=(
            None
            if row.comment_id is None
            else NotificationComment(id=row.comment_id, body=row.body)
        ),
    )


_NEWEST_FIRST = (Notification.created_at.desc(), Notification.id.desc())


async def page(
    session: AsyncSession, *, recipient_id: int, limit: int, offset: int
) -> NotificationList:
    """Newest first, with the recipient's counts: two statements, whatever the page size."""
    total, unread = await _counts(session, recipient_id)
    rows = await session.execute(
        _ITEMS.order_by(*_NEWEST_FIRST).limit(limit).offset(offset),
        {"recipient_id": recipient_id},
    )
    return NotificationList(
        notifications=[_to_read(row) for row in rows],
        notifications_count=total,
        unread_count=unread,
    )


def _unread(recipient_id: int) -> ColumnElement[bool]:
    return and_(Notification.recipient_id == recipient_id, Notification.read_at.is_(None))


async def _counts(session: AsyncSession, recipient_id: int) -> tuple[int, int]:
    """All and unread in one round trip, each counted on the index made for it."""
    every = select(func.count()).where(Notification.recipient_id == recipient_id)
    unread = select(func.count()).where(_unread(recipient_id))
    row = (await session.execute(select(every.scalar_subquery(), unread.scalar_subquery()))).one()
    return int(row[0]), int(row[1])


async def unread_count(session: AsyncSession, *, recipient_id: int) -> int:
    count = await session.scalar(select(func.count()).where(_unread(recipient_id)))
    return int(count or 0)


async def since(
    session: AsyncSession, *, recipient_id: int, after_id: int
) -> list[NotificationRead]:
    """The recipient's notifications with an id above `after_id`, oldest first: what a stream
    that reconnects missed, up to the newest `REPLAY_LIMIT`."""
    rows = await session.execute(
        _ITEMS.where(Notification.id > after_id).order_by(*_NEWEST_FIRST).limit(REPLAY_LIMIT),
        {"recipient_id": recipient_id},
    )
    return [_to_read(row) for row in reversed(rows.all())]


async def mark_read(
    session: AsyncSession, *, recipient_id: int, ids: Sequence[int] | None
) -> tuple[list[int] | None, int]:
    """Mark the recipient's notifications among `ids` read, or all of them when `ids` is None.

    Ids of someone else's notifications, or of none, are ignored, exactly as ids already read:
    the answer must not tell which ids exist. Returns the ids that changed (None for all, when
    any changed) and the unread count after the change.
    """
    statement = update(Notification).where(_unread(recipient_id)).values(read_at=func.now())
    if ids is None:
        result = await session.execute(statement.execution_options(synchronize_session=False))
        updated = cast(CursorResult[*tuple[Any, ...]], result).rowcount
        changed: list[int] | None = None if updated else []
    else:
        marked = await session.scalars(
            statement.where(Notification.id.in_(set(ids)))
            .returning(Notification.id)
            .execution_options(synchronize_session=False)
        )
        changed = sorted(marked)
    return changed, await unread_count(session, recipient_id=recipient_id)


# Writes, one per kind; each returns the live messages to publish after commit.


async def _announce(session: AsyncSession, created: Sequence[Row[int, int]]) -> list[LiveMessage]:
    """The live messages for a few new notifications, read back as the list shows them."""
    messages = []
    for notification_id, recipient_id in created:
        parameters = {"recipient_id": recipient_id, "notification_id": notification_id}
        row = (await session.execute(_ITEM, parameters)).one()
        messages.append((topic(recipient_id), notification_message(_to_read(row))))
    return messages


async def article_published(
    session: AsyncSession, *, article_id: int, occurred_at: datetime
) -> list[LiveMessage]:
    """Notify every follower of the article's author, in one statement however many."""
    parameters = {"article_id": article_id, "occurred_at": occurred_at}
    created = (await session.execute(_NOTIFY_FOLLOWERS, parameters)).all()
    if not created:
        return []
    author = (await session.execute(_AUTHOR_OF_ARTICLE, {"article_id": article_id})).one()
    # Every recipient follows the author, so the item differs only by its id: built once.
    shared = NotificationRead(
        id=0,
        kind=Kind.article,
        created_at=occurred_at,
        read=False,
        actor=ProfileRead(
            username=author.username, bio=author.bio, image=author.image or "", following=True
        ),
        article=NotificationArticle(slug=author.slug, title=author.title),
        comment=None,
    ).model_dump(mode="json")
    return [
        (
            topic(recipient_id),
            _encode(
                {
                    "event": "notification",
                    "id": notification_id,
                    "data": {"notification": {**shared, "id": notification_id}},
                }
            ),
        )
        for notification_id, recipient_id in created
    ]


async def comment_created(
    session: AsyncSession, *, comment_id: int, occurred_at: datetime
) -> list[LiveMessage]:
    """Notify the article's author, unless they wrote the comment themselves."""
    parameters = {"comment_id": comment_id, "occurred_at": occurred_at}
    created = (await session.execute(_NOTIFY_COMMENTED, parameters)).all()
    return await _announce(session, created)


async def user_followed(
    session: AsyncSession, *, follower_id: int, followee_id: int, occurred_at: datetime
) -> list[LiveMessage]:
    """Notify the followee, once per follower however often they follow again."""
    parameters = {
        "follower_id": follower_id,
        "followee_id": followee_id,
        "occurred_at": occurred_at,
    }
    created = (await session.execute(_NOTIFY_FOLLOWED, parameters)).all()
    return await _announce(session, created)


async def article_favorited(
    session: AsyncSession, *, article_id: int, user_id: int, occurred_at: datetime
) -> list[LiveMessage]:
    """Notify the article's author, unless they favorited it themselves; once per fan."""
    parameters = {"article_id": article_id, "user_id": user_id, "occurred_at": occurred_at}
    created = (await session.execute(_NOTIFY_FAVORITED, parameters)).all()
    return await _announce(session, created)


# The writes' statements, built once with bound parameters: a worker runs one for every
# event, and building it anew cost more than running it. Each returns (id, recipient_id) of
# the notifications it wrote.
_NOTIFICATIONS = table_of(Notification)
_OCCURRED_AT = bindparam("occurred_at", type_=DateTime(timezone=True))
_ARTICLE_ID = bindparam("article_id", type_=BigInteger)
_CREATED = (_NOTIFICATIONS.c.id, _NOTIFICATIONS.c.recipient_id)

_NOTIFY_FOLLOWERS = (
    insert(_NOTIFICATIONS)
    .from_select(
        ["recipient_id", "kind", "actor_id", "article_id", "created_at"],
        select(
            Follow.follower_id,
            literal(Kind.article.value),
            Article.author_id,
            Article.id,
            _OCCURRED_AT,
        )
        .join(Follow, Follow.followee_id == Article.author_id)
        .where(Article.id == _ARTICLE_ID),
    )
    .returning(*_CREATED)
)
_AUTHOR_OF_ARTICLE = (
    select(User.username, User.bio, User.image, Article.slug, Article.title)
    .join(Article, Article.author_id == User.id)
    .where(Article.id == _ARTICLE_ID)
)
_NOTIFY_COMMENTED = (
    insert(_NOTIFICATIONS)
    .from_select(
        ["recipient_id", "kind", "actor_id", "article_id", "comment_id", "created_at"],
        select(
            Article.author_id,
            literal(Kind.comment.value),
            Comment.author_id,
            Article.id,
            Comment.id,
            _OCCURRED_AT,
        )
        .join(Article, Article.id == Comment.article_id)
        .where(
            Comment.id == bindparam("comment_id", type_=BigInteger),
            Comment.author_id != Article.author_id,
        ),
    )
    .returning(*_CREATED)
)
_NOTIFY_FOLLOWED = (
    insert(_NOTIFICATIONS)
    .from_select(
        ["recipient_id", "kind", "actor_id", "created_at"],
        select(
            Follow.followee_id,
            literal(Kind.follow.value),
            Follow.follower_id,
            _OCCURRED_AT,
        ).where(
            Follow.follower_id == bindparam("follower_id", type_=BigInteger),
            Follow.followee_id == bindparam("followee_id", type_=BigInteger),
        ),
    )
    .on_conflict_do_nothing(
        index_elements=["recipient_id", "actor_id"],
        index_where=text("kind = 'follow'"),
    )
    .returning(*_CREATED)
)
_NOTIFY_FAVORITED = (
    insert(_NOTIFICATIONS)
    .from_select(
        ["recipient_id", "kind", "actor_id", "article_id", "created_at"],
        select(
            Article.author_id,
            literal(Kind.favorite.value),
            Favorite.user_id,
            Article.id,
            _OCCURRED_AT,
        )
        .join(Article, Article.id == Favorite.article_id)
        .where(
            Favorite.article_id == _ARTICLE_ID,
            Favorite.user_id == bindparam("user_id", type_=BigInteger),
            Favorite.user_id != Article.author_id,
        ),
    )
    .on_conflict_do_nothing(
        index_elements=["recipient_id", "article_id", "actor_id"],
        index_where=text("kind = 'favorite'"),
    )
    .returning(*_CREATED)
)

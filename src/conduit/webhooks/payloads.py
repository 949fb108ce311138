"""Who an event concerns, and the JSON body its deliveries carry.

An ordinary user's endpoints receive the events about their own articles (and the favorites
and comments on them) and about being followed; an admin's receive every event. Bodies hold
public facts only, the kind any visitor can read through the API (slugs, titles, usernames,
comment bodies), never emails or hashes. They are built when the event is fanned out, from the
database as it is then: something deleted since the event shows as `null` fields.
"""

import json
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.articles.models import Article, ArticleTag, Tag
from conduit.comments.models import Comment
from conduit.platform.jobs.registry import Event
from conduit.platform.schemas import format_timestamp
from conduit.users.models import User

ARTICLE_EVENTS = frozenset(
    {
        "article.published",
        "article.updated",
        "article.deleted",
        "article.favorited",
        "article.unfavorited",
    }
)
COMMENT_EVENTS = frozenset({"comment.created", "comment.deleted"})
FOLLOW_EVENTS = frozenset({"user.followed", "user.unfollowed"})


def _id(data: dict[str, Any], key: str) -> int | None:
    value = data.get(key)
    return value if isinstance(value, int) else None


async def concerned_user_ids(session: AsyncSession, event: Event) -> set[int]:
    """The users whose own endpoints receive `event` (admins' endpoints receive all)."""
    data = event.data
    concerned: int | None = None
    if event.type in ARTICLE_EVENTS:
        concerned = _id(data, "author_id")
    elif event.type in COMMENT_EVENTS:
        concerned = _id(data, "article_author_id")
        article_id = _id(data, "article_id")
        if concerned is None and article_id is not None:
            concerned = await session.scalar(
                select(Article.author_id).where(Article.id == article_id)
            )
    elif event.type in FOLLOW_EVENTS:
        concerned = _id(data, "followee_id")
    return set() if concerned is None else {concerned}


async def _usernames(session: AsyncSession, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    result = await session.execute(select(User.id, User.username).where(User.id.in_(ids)))
    return {row[0]: row[1] for row in result}


def _profile(usernames: dict[int, str], user_id: int | None) -> dict[str, Any]:
    return {"username": usernames.get(user_id) if user_id is not None else None}


async def _article(
    session: AsyncSession, data: dict[str, Any], usernames: dict[int, str]
) -> dict[str, Any]:
    article_id = _id(data, "article_id")
    found = (
        await session.execute(
            select(Article.slug, Article.title, Article.description, Article.author_id).where(
                Article.id == article_id
            )
        )
    ).one_or_none()
    if found is None:
        return {
            "slug": data.get("slug"),
            "title": None,
            "description": None,
            "tagList": None,
            "author": _profile(usernames, _id(data, "author_id")),
        }
    tags = await session.scalars(
        select(Tag.name)
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .where(ArticleTag.article_id == article_id)
        .order_by(Tag.name.collate("C"))
    )
    slug, title, description, author_id = found
    return {
        "slug": slug,
        "title": title,
        "description": description,
        "tagList": list(tags),
        "author": _profile(usernames, author_id),
    }


async def _comment(
    session: AsyncSession, data: dict[str, Any], usernames: dict[int, str]
) -> dict[str, Any]:
    comment_id = _id(data, "comment_id")
    body = await session.scalar(select(Comment.body).where(Comment.id == comment_id))
    return {
        "id": comment_id,
        "body": body,
        "author": _profile(usernames, _id(data, "author_id")),
    }


async def _describe(session: AsyncSession, event: Event) -> dict[str, Any]:
    data = event.data
    user_keys = ("user_id", "author_id", "follower_id", "followee_id", "article_author_id")
    ids = {value for key in user_keys if (value := _id(data, key)) is not None}
    if event.type in ARTICLE_EVENTS or event.type in COMMENT_EVENTS:
        article_id = _id(data, "article_id")
        author_id = await session.scalar(select(Article.author_id).where(Article.id == article_id))
        if author_id is not None:
            ids.add(author_id)
    usernames = await _usernames(session, ids)
    if event.type == "user.registered":
        return {"user": _profile(usernames, _id(data, "user_id"))}
    if event.type in FOLLOW_EVENTS:
        return {
            "follower": _profile(usernames, _id(data, "follower_id")),
            "followee": _profile(usernames, _id(data, "followee_id")),
        }
    if event.type in COMMENT_EVENTS:
        # `author_id` is the comment's author here; the article's is read with the article.
        article_data = {**data, "author_id": _id(data, "article_author_id")}
        return {
            "article": await _article(session, article_data, usernames),
            "comment": await _comment(session, data, usernames),
        }
    described = {"article": await _article(session, data, usernames)}
    if event.type in {"article.favorited", "article.unfavorited"}:
        described["user"] = _profile(usernames, _id(data, "user_id"))
    return described


async def build_body(session: AsyncSession, event: Event) -> str:
    """The JSON body of every delivery of `event`, exactly as it is sent and signed."""
    payload = {
        "id": str(event.id),
        "type": event.type,
        "occurredAt": format_timestamp(event.occurred_at),
        "data": await _describe(session, event),
    }
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))

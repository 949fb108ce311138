"""Queries on the feed's tables.

Writes are set-based: one INSERT ... SELECT or DELETE per change, whatever the number of
followers or articles it covers. Reads merge two sources, each an ordered index range scan cut
at `limit + offset` rows: the follower's own rows, and the newest articles of each followed
author whose articles are read from `article` (see `FanOut`).
"""

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    DateTime,
    Integer,
    Select,
    Subquery,
    and_,
    any_,
    bindparam,
    case,
    exists,
    func,
    literal,
    literal_column,
    select,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.articles.models import Article
from conduit.feed.models import FanOut, FeedAuthor, FeedEntry
from conduit.platform.db.base import table_of
from conduit.profiles.models import Follow
from conduit.users.models import User

# Where a batch of work through an author's articles stopped: (created_at, id) of the last one.
ArticleKey = tuple[datetime, int]


@dataclass(frozen=True, slots=True)
class AuthorState:
    mode: FanOut
    settled: bool
    cursor: ArticleKey | None


# --- the author's mode --------------------------------------------------------------------


async def lock_author(session: AsyncSession, author_id: int) -> AuthorState | None:
    """Lock the author's feed state for the rest of the transaction (creating it, in fan-out
    on write, on first use); None when the account no longer exists."""
    parameters = {"author_id": author_id}
    await session.execute(_start_author_state(), parameters)
    row = (await session.execute(_locked_author_state(), parameters)).one_or_none()
    if row is None:
        return None
    mode, settled, cursor_created_at, cursor_article_id = row
    cursor = None
    if cursor_created_at is not None and cursor_article_id is not None:
        cursor = (cursor_created_at, cursor_article_id)
    return AuthorState(mode=mode, settled=settled, cursor=cursor)


# The statements a worker runs for every publication are built once, with bound parameters:
# building them anew cost the worker more than running them.
_AUTHOR_ID = bindparam("author_id", type_=BigInteger)


@functools.cache
def _start_author_state() -> Any:
    return (
        insert(table_of(FeedAuthor))
        .from_select(["author_id"], select(User.id).where(User.id == _AUTHOR_ID))
        .on_conflict_do_nothing(index_elements=["author_id"])
    )


@functools.cache
def _locked_author_state() -> Any:
    return (
        select(
            FeedAuthor.mode,
            FeedAuthor.settled,
            FeedAuthor.cursor_created_at,
            FeedAuthor.cursor_article_id,
        )
        .where(FeedAuthor.author_id == _AUTHOR_ID)
        .with_for_update()
    )


async def set_mode(session: AsyncSession, author_id: int, mode: FanOut, *, settled: bool) -> None:
    """Put the author in `mode`, with any work through their articles starting over."""
    await session.execute(
        update(FeedAuthor)
        .where(FeedAuthor.author_id == author_id)
        .values(
            mode=mode,
            settled=settled,
            cursor_created_at=None,
            cursor_article_id=None,
            mode_changed_at=case(
                (FeedAuthor.mode != mode, func.now()), else_=FeedAuthor.mode_changed_at
            ),
        )
    )


async def advance_cursor(session: AsyncSession, author_id: int, cursor: ArticleKey) -> None:
    await session.execute(
        update(FeedAuthor)
        .where(FeedAuthor.author_id == author_id)
        .values(cursor_created_at=cursor[0], cursor_article_id=cursor[1])
    )


async def count_followers(session: AsyncSession, author_id: int, *, up_to: int) -> int:
    """The author's followers, counted no further than `up_to`: the answer to "more than the
    threshold?" costs at most that many index entries, however famous the author."""
    counted = await session.scalar(_count_followers(), {"author_id": author_id, "up_to": up_to})
    return counted or 0


@functools.cache
def _count_followers() -> Any:
    capped = (
        select(literal(1))
        .where(Follow.followee_id == _AUTHOR_ID)
        .limit(bindparam("up_to", type_=Integer))
        .subquery()
    )
    return select(func.count()).select_from(capped)


async def is_following(session: AsyncSession, *, follower_id: int, author_id: int) -> bool:
    return bool(
        await session.scalar(
            select(
                exists().where(Follow.follower_id == follower_id, Follow.followee_id == author_id)
            )
        )
    )


async def articles_before(
    session: AsyncSession, author_id: int, cursor: ArticleKey | None, *, limit: int
) -> list[ArticleKey]:
    """The author's next `limit` articles, newest first, after `cursor` (from the newest when
    None)."""
    statement = select(Article.created_at, Article.id).where(Article.author_id == author_id)
    if cursor is not None:
        statement = statement.where(tuple_(Article.created_at, Article.id) < tuple_(*cursor))
    result = await session.execute(
        statement.order_by(Article.created_at.desc(), Article.id.desc()).limit(limit)
    )
    return [(created_at, article_id) for created_at, article_id in result]


# --- the rows -----------------------------------------------------------------------------

_ENTRY_COLUMNS = ["follower_id", "article_created_at", "article_id", "author_id"]


async def write_rows_for_articles(session: AsyncSession, article_ids: Sequence[int]) -> None:
    """One row per current follower of each article's author, in one statement. Rows that
    exist already are kept, so writing twice writes once."""
    if not article_ids:
        return
    await session.execute(_write_rows_for_articles(), {"article_ids": list(article_ids)})


@functools.cache
def _write_rows_for_articles() -> Any:
    article_ids = bindparam("article_ids", type_=ARRAY(BigInteger))
    return (
        insert(table_of(FeedEntry))
        .from_select(
            _ENTRY_COLUMNS,
            select(Follow.follower_id, Article.created_at, Article.id, Article.author_id)
            .join(Follow, Follow.followee_id == Article.author_id)
            .where(Article.id == any_(article_ids)),
        )
        .on_conflict_do_nothing()
    )


async def delete_rows_for_articles(session: AsyncSession, article_ids: Sequence[int]) -> None:
    if not article_ids:
        return
    await session.execute(sql_delete(FeedEntry).where(FeedEntry.article_id.in_(article_ids)))


async def write_follower_rows(session: AsyncSession, *, follower_id: int, author_id: int) -> None:
    """A row in the follower's feed for each of the author's articles."""
    await session.execute(
        insert(FeedEntry)
        .from_select(
            _ENTRY_COLUMNS,
            select(literal(follower_id), Article.created_at, Article.id, Article.author_id).where(
                Article.author_id == author_id
            ),
        )
        .on_conflict_do_nothing()
    )


async def delete_follower_rows(session: AsyncSession, *, follower_id: int, author_id: int) -> None:
    """Remove the author's articles from the follower's feed.

    Found through the author's articles (one primary-key probe each) rather than by scanning
    the follower's whole feed for the author.
    """
    await session.execute(
        sql_delete(FeedEntry)
        .where(
            FeedEntry.follower_id == follower_id,
            FeedEntry.article_created_at == Article.created_at,
            FeedEntry.article_id == Article.id,
            Article.author_id == author_id,
        )
        .execution_options(synchronize_session=False)
    )


# --- reading a feed -----------------------------------------------------------------------
#
# The read statements are built once, with bound parameters, and filled in by
# `page_parameters`: building them anew was a large share of a feed request's time.

_FOLLOWER_ID = bindparam("follower_id", type_=BigInteger)
_DEPTH = bindparam("depth", type_=BigInteger)
_LIMIT = bindparam("limit", type_=Integer)
_OFFSET = bindparam("offset", type_=Integer)
_AFTER_CREATED_AT = bindparam("after_created_at", type_=DateTime(timezone=True))
_AFTER_ID = bindparam("after_id", type_=BigInteger)


@functools.cache
def _authors_read_from_articles() -> CTE:
    """The followed authors whose articles the feed reads from `article`: few, since only the
    most followed are. The mode is compared with a literal so that the partial index on
    those authors applies. One object, so that a statement holding both a page and the count
    names it once."""
    return (
        select(FeedAuthor.author_id)
        .join(
            Follow,
            and_(Follow.followee_id == FeedAuthor.author_id, Follow.follower_id == _FOLLOWER_ID),
        )
        .where(FeedAuthor.mode != literal_column(f"'{FanOut.on_write.value}'"))
        .cte("authors_read_from_articles")
    )


def _after(created_at: Any, article_id: Any) -> ColumnElement[bool]:
    return tuple_(created_at, article_id) < tuple_(_AFTER_CREATED_AT, _AFTER_ID)


def page_parameters(
    follower_id: int, *, limit: int, offset: int, after: ArticleKey | None = None
) -> dict[str, Any]:
    """The values of `page_keys(after=...)`'s parameters for one page."""
    # The depth is bound as a bigint: the largest offset plus a page is past an integer.
    parameters: dict[str, Any] = {
        "follower_id": follower_id,
        "depth": limit + offset,
        "limit": limit,
        "offset": offset,
    }
    if after is not None:
        parameters["after_created_at"], parameters["after_id"] = after
    return parameters


@functools.cache
def page_keys(*, after: bool) -> Subquery:
    """(created_at, id) of the articles on one page of the follower's feed, newest first,
    starting after a given article when `after`; bound by `page_parameters`.

    Rows of authors read from `article` are left out (some remain while they are deleted in
    batches, or are being backfilled), so no article comes from both sources.
    """
    read_from_articles = _authors_read_from_articles()
    from_rows = select(
        FeedEntry.article_created_at.label("created_at"), FeedEntry.article_id.label("id")
    ).where(
        FeedEntry.follower_id == _FOLLOWER_ID,
        FeedEntry.author_id.not_in(select(read_from_articles.c.author_id)),
    )
    of_author = select(Article.created_at, Article.id).where(
        Article.author_id == read_from_articles.c.author_id
    )
    if after:
        from_rows = from_rows.where(_after(FeedEntry.article_created_at, FeedEntry.article_id))
        of_author = of_author.where(_after(Article.created_at, Article.id))
    from_rows = from_rows.order_by(
        FeedEntry.article_created_at.desc(), FeedEntry.article_id.desc()
    ).limit(_DEPTH)
    newest = (
        of_author.order_by(Article.created_at.desc(), Article.id.desc())
        .limit(_DEPTH)
        .lateral("newest")
    )
    from_articles = select(newest.c.created_at, newest.c.id).select_from(
        read_from_articles.join(newest, true())
    )
    merged = union_all(from_rows, from_articles).subquery("merged")
    return (
        select(merged.c.created_at, merged.c.id)
        .order_by(merged.c.created_at.desc(), merged.c.id.desc())
        .limit(_LIMIT)
        .offset(_OFFSET)
        .subquery("feed_page")
    )


@functools.cache
def count_statement() -> Select[tuple[int]]:
    """The number of articles in the follower's feed (bound by `page_parameters` or
    `follower_id`), both sources together."""
    read_from_articles = _authors_read_from_articles()
    from_rows = (
        select(func.count())
        .select_from(FeedEntry)
        .where(
            FeedEntry.follower_id == _FOLLOWER_ID,
            FeedEntry.author_id.not_in(select(read_from_articles.c.author_id)),
        )
        .scalar_subquery()
    )
    from_articles = (
        select(func.count())
        .select_from(Article)
        .where(Article.author_id.in_(select(read_from_articles.c.author_id)))
        .scalar_subquery()
    )
    return select(from_rows + from_articles)

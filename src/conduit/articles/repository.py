"""Article queries. A page of a list or of the feed is its articles' keys (`KeyPage`): one count
and one statement for the page (one statement for both in the unfiltered list). What it shows
of each article comes from the article's cached summary, those missing loaded together by
`summaries_by_slug`: one statement, author joined, and one for their tags.

Pages are read one row past their end, so that whether another page follows (and where it
starts: `next_position`) costs nothing extra.
"""

import functools
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    DateTime,
    Float,
    Select,
    String,
    Subquery,
    Text,
    and_,
    bindparam,
    cast,
    false,
    func,
    literal,
    select,
    text,
    true,
    tuple_,
    union_all,
    update,
)
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import ARRAY, REGCONFIG, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, contains_eager, defer, joinedload, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from conduit.articles.cursors import Position
from conduit.articles.models import Article, ArticleTag, ArticleTally, Favorite, Tag
from conduit.feed import repository as feed_repository
from conduit.platform.db.base import table_of
from conduit.profiles.models import Follow
from conduit.users.models import User

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ArticleRow:
    """An article as one caller sees it: whether they favorited it and follow its author."""

    article: Article
    favorited: bool
    following: bool = False


@dataclass(frozen=True, slots=True)
class ArticleKey:
    """What a list holds of an article: enough to find its summary and to start a page after
    it."""

    id: int
    author_id: int
    slug: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class KeyPage:
    keys: list[ArticleKey]
    total: int
    # The last key's position when more articles follow it, else None.
    next_position: Position | None


@dataclass(frozen=True, slots=True)
class Search:
    """A full-text search: `text` in the web search syntax (words, "quoted phrases", `or`,
    `-excluded`), parsed with the text search configuration `language`. Only the newest
    `max_results` matches are ranked and counted, which bounds the work of a search for a
    common word however many articles contain it."""

    text: str
    language: str
    max_results: int


def _with_author_and_tags(
    statement: Select[Article], *, tags: Callable[[Any], Any] = selectinload
) -> Select[Article]:
    """`statement` with each article's author joined and its tags loaded by `tags`: a second
    statement for them all (`selectinload`, for many articles), or joined (`joinedload`, for
    one, whose row repeats once per tag)."""
    return statement.join(Article.author).options(
        contains_eager(Article.author), tags(Article.tags)
    )


def _summaries_with_author_and_tags(statement: Select[Article]) -> Select[Article]:
    """As `_with_author_and_tags`, for lists: the body, up to 100,000 characters, stays behind."""
    return _with_author_and_tags(statement).options(defer(Article.body, raiseload=True))


def _before(columns: Sequence[Any], values: Sequence[Any]) -> ColumnElement[bool]:
    """Row comparison: what comes after a position in a newest-first (descending) order."""
    return tuple_(*columns) < tuple_(*values)


def _newest_first_after(position: Position) -> ColumnElement[bool]:
    return _before(
        [Article.created_at, Article.id],
        [
            literal(position.created_at, DateTime(timezone=True)),
            literal(position.article_id, BigInteger),
        ],
    )


# The statements of the hottest reads are built once, with bound parameters, instead of per
# request: building them was a large share of a read's time (SQLAlchemy caches the compiled
# SQL, not the construction of the statement).
_VIEWER_ID = bindparam("viewer_id", type_=BigInteger)
_SLUG = bindparam("slug", type_=String)
_USER_ID = bindparam("user_id", type_=BigInteger)
_ARTICLE_ID = bindparam("article_id", type_=BigInteger)


def _with_favorited(statement: Select[Article], *, viewer: bool) -> Select[Article, bool]:
    """`statement` with the favorite flag of `:viewer_id` when `viewer`, else false."""
    if not viewer:
        return statement.add_columns(false())
    mine = aliased(Favorite)
    return statement.outerjoin(
        mine, and_(mine.article_id == Article.id, mine.user_id == _VIEWER_ID)
    ).add_columns(mine.user_id.is_not(None))


def _viewer_parameters(viewer_id: int | None) -> dict[str, Any]:
    return {} if viewer_id is None else {"viewer_id": viewer_id}


@functools.cache
def _article_by_slug(*, viewer: bool) -> Select[Article, bool, bool]:
    """One article with its author, its tags (joined: one statement, not two) and the viewer's
    flags."""
    statement = _with_author_and_tags(select(Article), tags=joinedload).where(Article.slug == _SLUG)
    if not viewer:
        return _with_favorited(statement, viewer=False).add_columns(false())
    # Nobody follows themselves (the follow table refuses it), so an author's own article
    # reads as not followed without asking.
    followed = aliased(Follow)
    return (
        _with_favorited(statement, viewer=True)
        .outerjoin(
            followed,
            and_(followed.follower_id == _VIEWER_ID, followed.followee_id == Article.author_id),
        )
        .add_columns(followed.follower_id.is_not(None))
    )


def tagged_with(tag: str) -> ColumnElement[bool]:
    return Article.id.in_(select(ArticleTag.article_id).join(Tag).where(Tag.name == tag))


def favorited_by(user_id: int) -> ColumnElement[bool]:
    return Article.id.in_(select(Favorite.article_id).where(Favorite.user_id == user_id))


def _cut(rows: list[R], positions: list[Position], limit: int) -> tuple[list[R], Position | None]:
    """The page of `limit` rows out of the `limit + 1` read, and where the next one starts."""
    if len(rows) <= limit:
        return rows, None
    return rows[:limit], positions[limit - 1]


_KEY_COLUMNS = (Article.id, Article.author_id, Article.slug, Article.created_at)


def _keys_of(page_keys: Any) -> Select[int, int, str, datetime]:
    """The keys of the articles `page_keys` names, newest first."""
    return (
        select(*_KEY_COLUMNS)
        .join(page_keys, page_keys.c.id == Article.id)
        .order_by(Article.created_at.desc(), Article.id.desc())
    )


async def _newest_first_keys(
    session: AsyncSession,
    statement: Select[int, int, str, datetime],
    limit: int,
    total: int,
    parameters: dict[str, Any] | None = None,
) -> KeyPage:
    """Run a newest-first key statement that reads `limit + 1` rows, and cut the page."""
    keys = [ArticleKey(*row) for row in await session.execute(statement, parameters)]
    return _newest_first_page(keys, total, limit)


def _newest_first_page(keys: list[ArticleKey], total: int, limit: int) -> KeyPage:
    """The page of `limit` keys out of the `limit + 1` read newest first, with `total`."""
    page, next_position = _cut(keys, [Position(key.created_at, key.id) for key in keys], limit)
    return KeyPage(page, total, next_position)


_SLUGS = bindparam("slugs", type_=String, expanding=True)


@functools.cache
def _summaries_by_slug() -> Select[Article]:
    return _summaries_with_author_and_tags(select(Article)).where(Article.slug.in_(_SLUGS))


async def summaries_by_slug(session: AsyncSession, slugs: Sequence[str]) -> list[Article]:
    """The articles with these slugs, with authors and tags and without bodies, in no order."""
    if not slugs:
        return []
    return list((await session.scalars(_summaries_by_slug(), {"slugs": list(slugs)})).unique())


async def count(session: AsyncSession, conditions: Sequence[ColumnElement[bool]]) -> int:
    """The number of articles matching every condition."""
    if not conditions:
        # A count of every row would read them all: the tally is kept as they change.
        statement = select(func.coalesce(func.sum(ArticleTally.articles), 0))
    else:
        statement = select(func.count()).select_from(Article).where(*conditions)
    return int(await session.scalar(statement) or 0)


async def count_tagged(session: AsyncSession, tag: str) -> int:
    return await session.scalar(select(Tag.articles_count).where(Tag.name == tag)) or 0


async def get_page(
    session: AsyncSession,
    *,
    conditions: Sequence[ColumnElement[bool]],
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> KeyPage:
    """Newest first, after `after` when given; `total` counts every matching article (with no
    conditions, as of the same snapshot as the page: it tells exactly how many publications the
    page has seen).

    The page's ids are found first, on the article table alone: skipped rows are index entries
    passed over, never joined to their authors and tags.
    """
    keys = select(Article.id).where(*conditions)
    if after is not None:
        keys = keys.where(_newest_first_after(after))
    page_keys = (
        keys.order_by(Article.created_at.desc(), Article.id.desc())
        .limit(limit + 1)
        .offset(offset)
        .subquery("page_keys")
    )
    if not conditions:
        return await _unfiltered_page(session, page_keys, limit)
    total = await count(session, conditions)
    return await _newest_first_keys(session, _keys_of(page_keys), limit, total)


async def _unfiltered_page(session: AsyncSession, page_keys: Subquery, limit: int) -> KeyPage:
    """`get_page` of every article: the page and the count in one statement, and so from one
    snapshot, which a commit cannot come between."""
    tally = select(func.coalesce(func.sum(ArticleTally.articles), 0))
    keys = select(*_KEY_COLUMNS).join(page_keys, page_keys.c.id == Article.id)
    return await _page_with_total(session, _with_total(keys, tally), limit)


def _with_total(
    keys: Select[int, int, str, datetime], total: Select[Any]
) -> Select[Any, int, int, str, datetime]:
    """The rows of `keys`, newest first, each with the one value `total` selects: outer-joined
    to it, so that a page past the end still brings it."""
    counted = total.subquery("counted")
    found = keys.subquery("keys")
    return (
        select(counted.c[0], found.c.id, found.c.author_id, found.c.slug, found.c.created_at)
        .select_from(counted.outerjoin(found, true()))
        .order_by(found.c.created_at.desc(), found.c.id.desc())
    )


async def _page_with_total(
    session: AsyncSession,
    statement: Select[Any, int, int, str, datetime],
    limit: int,
    parameters: dict[str, Any] | None = None,
) -> KeyPage:
    """Run a `_with_total` statement that reads `limit + 1` keys, and cut the page."""
    rows = list(await session.execute(statement, parameters))
    found = [ArticleKey(*row[1:]) for row in rows if row[1] is not None]
    return _newest_first_page(found, int(rows[0][0] or 0), limit)


async def get_tag_page(
    session: AsyncSession,
    *,
    tag: str,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> KeyPage:
    """The articles carrying `tag`, newest first: a range of the tag's index entries, however
    many articles the tag is on."""
    keys = select(
        ArticleTag.article_id.label("id"), ArticleTag.article_created_at.label("created_at")
    ).where(ArticleTag.tag_id == select(Tag.id).where(Tag.name == tag).scalar_subquery())
    if after is not None:
        keys = keys.where(
            _before(
                [ArticleTag.article_created_at, ArticleTag.article_id],
                [
                    literal(after.created_at, DateTime(timezone=True)),
                    literal(after.article_id, BigInteger),
                ],
            )
        )
    page_keys = (
        keys.order_by(ArticleTag.article_created_at.desc(), ArticleTag.article_id.desc())
        .limit(limit + 1)
        .offset(offset)
        .subquery("page_keys")
    )
    total = await count_tagged(session, tag)
    return await _newest_first_keys(session, _keys_of(page_keys), limit, total)


async def search_page(
    session: AsyncSession,
    *,
    search: Search,
    conditions: Sequence[ColumnElement[bool]],
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> KeyPage:
    """Matches of `search` (and `conditions`), best ranked first, then newest first.

    One statement finds the candidates (the newest `max_results` matches: an index range scan
    newest first for a common word, the GIN index for a rare one, as the planner estimates),
    ranks them, counts them and cuts the page.
    """
    query = func.websearch_to_tsquery(cast(literal(search.language), REGCONFIG), search.text)
    candidates = (
        select(Article.id, Article.created_at, Article.search)
        .where(Article.search.bool_op("@@")(query), *conditions)
        .order_by(Article.created_at.desc(), Article.id.desc())
        .limit(search.max_results)
        .cte("candidates")
    )
    ranked = select(
        candidates.c.id,
        candidates.c.created_at,
        # float4 in PostgreSQL; compared with a cursor's value as float8, which holds it exactly.
        cast(func.ts_rank(candidates.c.search, query), Float).label("rank"),
        func.count().over().label("total"),
    ).subquery("ranked")
    keys = select(ranked)
    if after is not None:
        keys = keys.where(
            _before(
                [ranked.c.rank, ranked.c.created_at, ranked.c.id],
                [
                    literal(after.rank, Float),
                    literal(after.created_at, DateTime(timezone=True)),
                    literal(after.article_id, BigInteger),
                ],
            )
        )
    order = (ranked.c.rank.desc(), ranked.c.created_at.desc(), ranked.c.id.desc())
    page_keys = keys.order_by(*order).limit(limit + 1).offset(offset).subquery("page_keys")
    statement = (
        select(*_KEY_COLUMNS, page_keys.c.rank, page_keys.c.total)
        .join(page_keys, page_keys.c.id == Article.id)
        .order_by(page_keys.c.rank.desc(), page_keys.c.created_at.desc(), page_keys.c.id.desc())
    )
    result = list(await session.execute(statement))
    found = [ArticleKey(*row[:4]) for row in result]
    positions = [Position(created_at=row[3], article_id=row[0], rank=row[4]) for row in result]
    if result:
        total = int(result[0][5])
    else:
        # Past the last page: the statement returned no row to carry the count.
        total = await session.scalar(select(func.count()).select_from(candidates)) or 0
    page, next_position = _cut(found, positions, limit)
    return KeyPage(page, total, next_position)


@functools.cache
def _feed_page(*, after: bool) -> Select[Any, int, int, str, datetime]:
    return _with_total(
        _keys_of(feed_repository.page_keys(after=after)), feed_repository.count_statement()
    )


async def get_feed_page(
    session: AsyncSession,
    *,
    viewer_id: int,
    limit: int,
    offset: int = 0,
    after: Position | None = None,
) -> KeyPage:
    """A page of the viewer's feed (see `conduit.feed`), newest first, and its total, in one
    statement."""
    parameters = feed_repository.page_parameters(
        viewer_id,
        limit=limit + 1,
        offset=offset,
        after=None if after is None else (after.created_at, after.article_id),
    )
    return await _page_with_total(session, _feed_page(after=after is not None), limit, parameters)


async def get_by_slug(
    session: AsyncSession, slug: str, *, viewer_id: int | None
) -> ArticleRow | None:
    statement = _article_by_slug(viewer=viewer_id is not None)
    parameters = {"slug": slug, **_viewer_parameters(viewer_id)}
    # Unique: the joined tags repeat the article's row once per tag.
    found = (await session.execute(statement, parameters)).unique().one_or_none()
    return None if found is None else ArticleRow(found[0], bool(found[1]), bool(found[2]))


@functools.cache
def _key_by_slug() -> Select[int, int, str, datetime]:
    return select(*_KEY_COLUMNS).where(Article.slug == _SLUG)


async def get_key_by_slug(session: AsyncSession, slug: str) -> ArticleKey | None:
    """What a write on an article's comments needs of it: no author, tags or text."""
    found = (await session.execute(_key_by_slug(), {"slug": slug})).one_or_none()
    return None if found is None else ArticleKey(*found)


async def favorited_and_followed(
    session: AsyncSession,
    viewer_id: int,
    article_ids: Collection[int],
    author_ids: Collection[int],
) -> tuple[set[int], set[int]]:
    """Which of `article_ids` the viewer has favorited and which of `author_ids` they follow:
    one statement for a whole page. The viewer is never asked about themselves (the follow
    table refuses it), as for an author reading their own article back after writing it."""
    if not article_ids:
        return set(), set()
    statement: Any = select(literal("favorited"), Favorite.article_id).where(
        Favorite.user_id == viewer_id, Favorite.article_id.in_(set(article_ids))
    )
    others = set(author_ids) - {viewer_id}
    if others:
        followed = select(literal("followed"), Follow.followee_id).where(
            Follow.follower_id == viewer_id, Follow.followee_id.in_(others)
        )
        statement = union_all(statement, followed)
    flags: dict[str, set[int]] = {"favorited": set(), "followed": set()}
    for flag, found in await session.execute(statement):
        flags[flag].add(found)
    return flags["favorited"], flags["followed"]


async def insert_unless_slug_taken(
    session: AsyncSession, *, slug: str, author: User, tags: list[Tag], **values: Any
) -> tuple[Article, list[str]] | None:
    """The article inserted under `slug` with its tag links, and the lexemes it is indexed
    under for search; or None (and nothing written) when another article has that slug. Its
    id and timestamps come back with the insert."""
    inserted = (
        await session.execute(
            insert(Article)
            .values(slug=slug, author_id=author.id, **values)
            .on_conflict_do_nothing(index_elements=[Article.slug])
            .returning(Article, func.tsvector_to_array(Article.search))
        )
    ).first()
    if inserted is None:
        return None
    article, lexemes = inserted
    set_committed_value(article, "author", author)
    set_committed_value(article, "tags", tags)
    if tags:
        links = {
            "article_id": article.id,
            "tag_ids": [tag.id for tag in tags],
            "created_at": article.created_at,
        }
        await session.execute(_link_tags(), links)
    return article, lexemes


# Many rows in one statement whose text is the same however many there are (an array
# unnested), so that SQLAlchemy compiles it once: a multi-row VALUES is compiled anew each time.
@functools.cache
def _link_tags() -> Any:
    links = table_of(ArticleTag)
    return insert(links).from_select(
        [links.c.article_id, links.c.tag_id, links.c.article_created_at],
        select(
            _ARTICLE_ID,
            func.unnest(bindparam("tag_ids", type_=ARRAY(BigInteger))),
            bindparam("created_at", type_=DateTime(timezone=True)),
        ),
    )


@functools.cache
def _add_missing_tags() -> Any:
    names = func.unnest(bindparam("names", type_=ARRAY(String)))
    tags = table_of(Tag)
    return (
        insert(tags)
        .from_select([tags.c.name], select(names))
        .on_conflict_do_nothing(index_elements=[tags.c.name])
    )


async def tags_by_name(session: AsyncSession, names: Iterable[str]) -> list[Tag]:
    """The tags with these names, creating the missing ones."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    await session.execute(_add_missing_tags(), {"names": wanted})
    # Python compares code points, which for UTF-8 is the byte order of the "C" collation.
    result = await session.scalars(select(Tag).where(Tag.name.in_(wanted)))
    return sorted(result, key=lambda tag: tag.name)


async def delete(session: AsyncSession, article_id: int) -> None:
    """Delete an article; its tags links, favorites and comments go with it (ON DELETE CASCADE)."""
    await session.execute(
        sql_delete(Article)
        .where(Article.id == article_id)
        .execution_options(synchronize_session=False)
    )


@functools.cache
def _favorite_counted() -> Any:
    added = (
        insert(Favorite)
        .values(user_id=_USER_ID, article_id=_ARTICLE_ID)
        .on_conflict_do_nothing()
        .returning(Favorite.article_id)
        .cte("added")
    )
    return _shift_favorites_count(added, +1)


@functools.cache
def _unfavorite_counted() -> Any:
    removed = (
        sql_delete(Favorite)
        .where(Favorite.user_id == _USER_ID, Favorite.article_id == _ARTICLE_ID)
        .returning(Favorite.article_id)
        .cte("removed")
    )
    return _shift_favorites_count(removed, -1)


def _shift_favorites_count(changed: Any, delta: int) -> Any:
    """The counter moved by `delta` in the statement that changed the favorite, and only if
    it did: one round trip, and the count can never part from the rows."""
    return (
        update(Article)
        .where(Article.id.in_(select(changed.c.article_id)))
        .values(favorites_count=Article.favorites_count + delta)
        .returning(Article.favorites_count)
        .execution_options(synchronize_session=False)
    )


async def add_favorite(session: AsyncSession, *, user_id: int, article_id: int) -> int | None:
    """The article's new favorites count when the favorite is new (the counter moves only
    then), else None."""
    parameters = {"user_id": user_id, "article_id": article_id}
    count: int | None = await session.scalar(_favorite_counted(), parameters)
    return count


async def remove_favorite(session: AsyncSession, *, user_id: int, article_id: int) -> int | None:
    """The article's new favorites count when there was a favorite to remove, else None."""
    parameters = {"user_id": user_id, "article_id": article_id}
    count: int | None = await session.scalar(_unfavorite_counted(), parameters)
    return count


async def tag_names_in_use(session: AsyncSession) -> list[str]:
    """Tags carried by at least one article, most used first."""
    result = await session.execute(
        select(Tag.name)
        .where(Tag.articles_count > 0)
        .order_by(Tag.articles_count.desc(), Tag.name.collate("C"))
    )
    return list(result.scalars())


async def text_search_configuration_exists(session: AsyncSession, name: str) -> bool:
    """Whether PostgreSQL knows the text search configuration `name` (`english`, `simple`...)."""
    found = await session.scalar(
        text("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_ts_config WHERE cfgname = :name)"),
        {"name": name},
    )
    return bool(found)


async def search_query_text(session: AsyncSession, *, language: str, text: str) -> str:
    """PostgreSQL's text of the tsquery that the search `text` parses to under `language`."""
    parsed = await session.scalar(_SEARCH_QUERY_TEXT, {"language": language, "search_text": text})
    return parsed or ""


_SEARCH_QUERY_TEXT = select(
    cast(
        func.websearch_to_tsquery(
            cast(bindparam("language", type_=String), REGCONFIG),
            bindparam("search_text", type_=String),
        ),
        Text,
    )
)

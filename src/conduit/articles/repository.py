"""Article queries. A page of articles costs a fixed number of statements: one count, one page
(author joined, the caller's favorite flag outer-joined), and one for the tags of the page."""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, Select, and_, false, func, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, contains_eager, selectinload

from conduit.articles.models import Article, ArticleTag, Favorite, Tag
from conduit.feed import repository as feed_repository


@dataclass(frozen=True, slots=True)
class ArticleRow:
    article: Article
    favorited: bool


def _with_author_and_tags(statement: Select[Article]) -> Select[Article]:
    return statement.join(Article.author).options(
        contains_eager(Article.author), selectinload(Article.tags)
    )


def _with_favorited(statement: Select[Article], viewer_id: int | None) -> Select[Article, bool]:
    if viewer_id is None:
        return statement.add_columns(false())
    mine = aliased(Favorite)
    return statement.outerjoin(
        mine, and_(mine.article_id == Article.id, mine.user_id == viewer_id)
    ).add_columns(mine.user_id.is_not(None))


def tagged_with(tag: str) -> ColumnElement[bool]:
    return Article.id.in_(select(ArticleTag.article_id).join(Tag).where(Tag.name == tag))


def favorited_by(user_id: int) -> ColumnElement[bool]:
    return Article.id.in_(select(Favorite.article_id).where(Favorite.user_id == user_id))


async def get_page(
    session: AsyncSession,
    *,
    conditions: Sequence[ColumnElement[bool]],
    viewer_id: int | None,
    limit: int,
    offset: int,
) -> tuple[list[ArticleRow], int]:
    """Newest first; the second value is the number of all matching articles."""
    total = await session.scalar(select(func.count()).select_from(Article).where(*conditions))
    statement = _with_favorited(_with_author_and_tags(select(Article)), viewer_id)
    statement = (
        statement.where(*conditions)
        .order_by(Article.created_at.desc(), Article.id.desc())
        .limit(limit)
        .offset(offset)
    )
    rows = [
        ArticleRow(article, bool(favorited))
        for article, favorited in await session.execute(statement)
    ]
    return rows, total or 0


async def get_feed_page(
    session: AsyncSession, *, viewer_id: int, limit: int, offset: int
) -> tuple[list[ArticleRow], int]:
    """A page of the viewer's feed (see `conduit.feed`), newest first, and its total."""
    total = await feed_repository.count(session, viewer_id)
    keys = feed_repository.page_keys(viewer_id, limit=limit, offset=offset)
    statement = _with_favorited(_with_author_and_tags(select(Article)), viewer_id)
    statement = statement.join(keys, keys.c.id == Article.id).order_by(
        Article.created_at.desc(), Article.id.desc()
    )
    rows = [
        ArticleRow(article, bool(favorited))
        for article, favorited in await session.execute(statement)
    ]
    return rows, total


async def get_by_slug(
    session: AsyncSession, slug: str, *, viewer_id: int | None
) -> ArticleRow | None:
    statement = _with_favorited(_with_author_and_tags(select(Article)), viewer_id)
    result = (await session.execute(statement.where(Article.slug == slug))).one_or_none()
    return None if result is None else ArticleRow(result[0], bool(result[1]))


async def favorited_among(
    session: AsyncSession, user_id: int, article_ids: Sequence[int]
) -> set[int]:
    """The ids in `article_ids` that `user_id` has favorited: one query for a whole page."""
    if not article_ids:
        return set()
    result = await session.scalars(
        select(Favorite.article_id).where(
            Favorite.user_id == user_id, Favorite.article_id.in_(set(article_ids))
        )
    )
    return set(result)


async def slug_exists(session: AsyncSession, slug: str) -> bool:
    return bool(
        await session.scalar(select(select(Article.id).where(Article.slug == slug).exists()))
    )


async def tags_by_name(session: AsyncSession, names: Iterable[str]) -> list[Tag]:
    """The tags with these names, creating the missing ones."""
    wanted = list(dict.fromkeys(names))
    if not wanted:
        return []
    await session.execute(
        insert(Tag)
        .values([{"name": name} for name in wanted])
        .on_conflict_do_nothing(index_elements=["name"])
    )
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


async def add_favorite(session: AsyncSession, *, user_id: int, article_id: int) -> bool:
    """True when the favorite is new; the article's counter moves only then."""
    inserted = await session.scalar(
        insert(Favorite)
        .values(user_id=user_id, article_id=article_id)
        .on_conflict_do_nothing()
        .returning(Favorite.article_id)
    )
    if inserted is not None:
        await _shift_favorites_count(session, article_id, +1)
    return inserted is not None


async def remove_favorite(session: AsyncSession, *, user_id: int, article_id: int) -> bool:
    deleted = await session.scalar(
        sql_delete(Favorite)
        .where(Favorite.user_id == user_id, Favorite.article_id == article_id)
        .returning(Favorite.article_id)
    )
    if deleted is not None:
        await _shift_favorites_count(session, article_id, -1)
    return deleted is not None


async def _shift_favorites_count(session: AsyncSession, article_id: int, delta: int) -> None:
    await session.execute(
        update(Article)
        .where(Article.id == article_id)
        .values(favorites_count=Article.favorites_count + delta)
        .execution_options(synchronize_session=False)
    )


async def tag_names_in_use(session: AsyncSession) -> list[str]:
    """Tags carried by at least one article, most used first."""
    usage = func.count(ArticleTag.article_id)
    result = await session.execute(
        select(Tag.name)
        .join(ArticleTag, ArticleTag.tag_id == Tag.id)
        .group_by(Tag.id)
        .order_by(usage.desc(), Tag.name.collate("C"))
    )
    return list(result.scalars())

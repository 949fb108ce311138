"""Articles, tags, favorites and the personal feed."""

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.articles import repository, slugs
from conduit.articles.models import Article
from conduit.articles.repository import ArticleRow
from conduit.articles.schemas import (
    ArticleList,
    ArticleRead,
    ArticleSummary,
    NewArticle,
    UpdateArticle,
)
from conduit.platform.errors import Forbidden, NotFound, ValidationFailed
from conduit.profiles import service as profiles_service
from conduit.users import repository as users_repository
from conduit.users.models import User

SLUG_ATTEMPTS = 5


class ArticleNotFound(NotFound):
    field = "article"


class NotArticleAuthor(Forbidden):
    field = "article"
    message = "can only be changed by its author"


@dataclass(frozen=True, slots=True)
class ArticleFilters:
    tag: str | None = None
    author: str | None = None
    favorited: str | None = None


def _summary_fields(row: ArticleRow, *, following: bool) -> dict[str, object]:
    article = row.article
    return {
        "slug": article.slug,
        "title": article.title,
        "description": article.description,
        "tag_list": [tag.name for tag in article.tags],
        "created_at": article.created_at,
        "updated_at": article.updated_at,
        "favorited": row.favorited,
        "favorites_count": article.favorites_count,
        "author": profiles_service.to_profile(article.author, following=following),
    }


async def _summaries(
    session: AsyncSession, rows: list[ArticleRow], total: int, viewer: User | None
) -> ArticleList:
    followed = await profiles_service.followed_among(
        session, follower=viewer, candidates={row.article.author_id for row in rows}
    )
    return ArticleList(
        articles=[
            ArticleSummary.model_validate(
                _summary_fields(row, following=row.article.author_id in followed)
            )
            for row in rows
        ],
        articles_count=total,
    )


async def to_read(session: AsyncSession, row: ArticleRow, viewer: User | None) -> ArticleRead:
    following = await profiles_service.is_following(
        session, follower=viewer, followee=row.article.author
    )
    return ArticleRead.model_validate(
        {**_summary_fields(row, following=following), "body": row.article.body}
    )


async def list_articles(
    session: AsyncSession, *, filters: ArticleFilters, viewer: User | None, limit: int, offset: int
) -> ArticleList:
    conditions: list[ColumnElement[bool]] = []
    if filters.tag is not None:
        conditions.append(repository.tagged_with(filters.tag))
    if filters.author is not None:
        author = await users_repository.get_by_username(session, filters.author)
        if author is None:
            return ArticleList(articles=[], articles_count=0)
        conditions.append(Article.author_id == author.id)
    if filters.favorited is not None:
        fan = await users_repository.get_by_username(session, filters.favorited)
        if fan is None:
            return ArticleList(articles=[], articles_count=0)
        conditions.append(repository.favorited_by(fan.id))
    rows, total = await repository.get_page(
        session,
        conditions=conditions,
        viewer_id=viewer.id if viewer else None,
        limit=limit,
        offset=offset,
    )
    return await _summaries(session, rows, total, viewer)


async def feed(session: AsyncSession, *, viewer: User, limit: int, offset: int) -> ArticleList:
    """Articles by the authors the viewer follows, newest first."""
    followed_authors = Article.author_id.in_(profiles_service.followee_ids(viewer.id))
    rows, total = await repository.get_page(
        session, conditions=[followed_authors], viewer_id=viewer.id, limit=limit, offset=offset
    )
    return await _summaries(session, rows, total, viewer)


async def get(session: AsyncSession, slug: str, *, viewer: User | None) -> ArticleRow:
    row = await repository.get_by_slug(session, slug, viewer_id=viewer.id if viewer else None)
    if row is None:
        raise ArticleNotFound()
    return row


def ensure_author(article: Article, user: User) -> None:
    if article.author_id != user.id:
        raise NotArticleAuthor()


async def _insert_with_unique_slug(session: AsyncSession, article: Article, title: str) -> None:
    base = slugs.base_slug(title)
    candidate = base
    if base in slugs.RESERVED or await repository.slug_exists(session, base):
        candidate = slugs.with_suffix(base)
    for _ in range(SLUG_ATTEMPTS):
        article.slug = candidate
        try:
            async with session.begin_nested():
                session.add(article)
                await session.flush()
            return
        except IntegrityError:
            # Another writer took the slug between the check and the insert.
            candidate = slugs.with_suffix(base)
    raise ValidationFailed("could not be made unique; try a different title", field="slug")


async def create(session: AsyncSession, *, author: User, new: NewArticle) -> ArticleRow:
    article = Article(
        title=new.title,
        description=new.description,
        body=new.body,
        author=author,
        favorites_count=0,
        tags=await repository.tags_by_name(session, new.tag_list),
    )
    await _insert_with_unique_slug(session, article, new.title)
    await session.refresh(article, ["created_at", "updated_at"])
    return ArticleRow(article, favorited=False)


async def update(
    session: AsyncSession, *, row: ArticleRow, editor: User, changes: UpdateArticle
) -> ArticleRow:
    article = row.article
    ensure_author(article, editor)
    if changes.title is not None:
        article.title = changes.title
    if changes.description is not None:
        article.description = changes.description
    if changes.body is not None:
        article.body = changes.body
    if changes.tag_list is not None:
        article.tags = await repository.tags_by_name(session, changes.tag_list)
    article.updated_at = func.now()
    await session.flush()
    await session.refresh(article, ["updated_at"])
    return row


async def delete(session: AsyncSession, *, row: ArticleRow, user: User) -> None:
    ensure_author(row.article, user)
    await repository.delete(session, row.article.id)


async def favorite(session: AsyncSession, *, row: ArticleRow, user: User) -> ArticleRow:
    await repository.add_favorite(session, user_id=user.id, article_id=row.article.id)
    await session.refresh(row.article, ["favorites_count"])
    return ArticleRow(row.article, favorited=True)


async def unfavorite(session: AsyncSession, *, row: ArticleRow, user: User) -> ArticleRow:
    await repository.remove_favorite(session, user_id=user.id, article_id=row.article.id)
    await session.refresh(row.article, ["favorites_count"])
    return ArticleRow(row.article, favorited=False)


async def tags(session: AsyncSession) -> list[str]:
    return await repository.tag_names_in_use(session)

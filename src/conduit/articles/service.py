"""Articles, tags, favorites and the personal feed.

Article reads, anonymous or not, go through the cache (`platform.cache`): an entry holds what
every caller sees, with `favorited` and `following` false, and the caller's own flags are
read per request. Writes invalidate the generations their change touches after commit.
"""

import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.articles import cursors, repository, slugs
from conduit.articles.models import Article
from conduit.articles.repository import ArticleRow, Page
from conduit.articles.schemas import (
    ArticleList,
    ArticleRead,
    ArticleSummary,
    NewArticle,
    UpdateArticle,
)
from conduit.platform.cache import Cache, CacheAddress, invalidate_after_commit
from conduit.platform.errors import Forbidden, NotFound, ValidationFailed
from conduit.platform.jobs.queue import publish
from conduit.profiles import service as profiles_service
from conduit.users import repository as users_repository
from conduit.users.models import User

SLUG_ATTEMPTS = 5

# Cache generations: every article list, and the tags in use.
ARTICLE_LISTS = "articles"
TAGS = "tags"
# Part of a cached list's key: a new layout of the entry must not read entries of the old one.
LIST_ENTRY_FORMAT = 2


def article_generation(slug: str) -> str:
    return f"article:{slug}"


class ArticleNotFound(NotFound):
    field = "article"


class NotArticleAuthor(Forbidden):
    field = "article"
    message = "can only be changed by its author"


class NotArticleAuthorOrModerator(Forbidden):
    field = "article"
    message = "can only be deleted by its author or a moderator"


@dataclass(frozen=True, slots=True)
class ArticleFilters:
    tag: str | None = None
    author: str | None = None
    favorited: str | None = None
    # Full-text search (`?q=`): ranks the matches instead of listing newest first.
    q: str | None = None


@dataclass(frozen=True, slots=True)
class PageRequest:
    """Which page: `offset` rows in, or after the article a `cursor` names (not both)."""

    limit: int
    offset: int = 0
    cursor: str | None = None


@dataclass(frozen=True, slots=True)
class SearchOptions:
    language: str
    max_results: int


TAGS_ENTRY = CacheAddress("tags", "tags", (TAGS,))


def article_entry(slug: str) -> CacheAddress:
    """The cached envelope of one article, as anyone but its readers' own flags see it."""
    # A favorite or an edit of another article leaves this one as it was: no list generation.
    return CacheAddress(
        "article", f"article:{slug}", (article_generation(slug), profiles_service.AUTHORS)
    )


# Every field of both, read one by one: `asdict` deep-copies, which was most of the cost of
# finding a cached list page before routing.
_FILTER_FIELDS = tuple(field.name for field in fields(ArticleFilters))
_PAGE_FIELDS = tuple(field.name for field in fields(PageRequest))


def list_entry(filters: ArticleFilters, request: PageRequest) -> CacheAddress:
    """The cached page of a list: its ids, and the listing as an anonymous caller sees it."""
    described = {name: getattr(filters, name) for name in _FILTER_FIELDS}
    described.update((name, getattr(request, name)) for name in _PAGE_FIELDS)
    query = json.dumps(described, sort_keys=True)
    digest = hashlib.sha256(query.encode()).hexdigest()[:32]
    return CacheAddress(
        "articles",
        f"articles:{LIST_ENTRY_FORMAT}:{digest}",
        (ARTICLE_LISTS, profiles_service.AUTHORS),
    )


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


async def _summaries(session: AsyncSession, page: Page, viewer: User | None) -> ArticleList:
    followed = await profiles_service.followed_among(
        session, follower=viewer, candidates={row.article.author_id for row in page.rows}
    )
    return ArticleList(
        articles=[
            ArticleSummary.model_validate(
                _summary_fields(row, following=row.article.author_id in followed)
            )
            for row in page.rows
        ],
        articles_count=page.total,
        next_cursor=None if page.next_position is None else cursors.encode(page.next_position),
    )


async def to_read(session: AsyncSession, row: ArticleRow, viewer: User | None) -> ArticleRead:
    following = await profiles_service.is_following(
        session, follower=viewer, followee=row.article.author
    )
    return ArticleRead.model_validate(
        {**_summary_fields(row, following=following), "body": row.article.body}
    )


async def _conditions(
    session: AsyncSession, filters: ArticleFilters
) -> list[ColumnElement[bool]] | None:
    """The filters as SQL conditions; None when a named user does not exist (no match)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.tag is not None:
        conditions.append(repository.tagged_with(filters.tag))
    if filters.author is not None:
        author = await users_repository.get_by_username(session, filters.author)
        if author is None:
            return None
        conditions.append(Article.author_id == author.id)
    if filters.favorited is not None:
        fan = await users_repository.get_by_username(session, filters.favorited)
        if fan is None:
            return None
        conditions.append(repository.favorited_by(fan.id))
    return conditions


async def _page(
    session: AsyncSession,
    *,
    filters: ArticleFilters,
    viewer: User | None,
    request: PageRequest,
    search: SearchOptions,
) -> Page:
    after = None
    if request.cursor is not None:
        after = cursors.decode(request.cursor, ranked=filters.q is not None)
    conditions = await _conditions(session, filters)
    if conditions is None:
        return Page(rows=[], total=0, next_position=None)
    viewer_id = viewer.id if viewer else None
    if filters.q is not None:
        return await repository.search_page(
            session,
            search=repository.Search(filters.q, search.language, search.max_results),
            conditions=conditions,
            viewer_id=viewer_id,
            limit=request.limit,
            offset=request.offset,
            after=after,
        )
    if filters.tag is not None and filters.author is None and filters.favorited is None:
        # A popular tag is on a large share of the articles: its own index orders them.
        return await repository.get_tag_page(
            session,
            tag=filters.tag,
            viewer_id=viewer_id,
            limit=request.limit,
            offset=request.offset,
            after=after,
        )
    return await repository.get_page(
        session,
        conditions=conditions,
        viewer_id=viewer_id,
        limit=request.limit,
        offset=request.offset,
        after=after,
    )


async def feed(session: AsyncSession, *, viewer: User, request: PageRequest) -> ArticleList:
    """Articles by the authors the viewer follows, newest first, from the feed read model: it
    follows follows, unfollows and publications once the worker has handled them."""
    after = None if request.cursor is None else cursors.decode(request.cursor, ranked=False)
    page = await repository.get_feed_page(
        session, viewer_id=viewer.id, limit=request.limit, offset=request.offset, after=after
    )
    return await _summaries(session, page, viewer)


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


async def create(
    session: AsyncSession, *, author: User, new: NewArticle, search_language: str
) -> ArticleRow:
    """Publish `new`, indexed for search under the text search configuration given."""
    article = Article(
        search_language=search_language,
        title=new.title,
        description=new.description,
        body=new.body,
        author=author,
        favorites_count=0,
        tags=await repository.tags_by_name(session, new.tag_list),
    )
    await _insert_with_unique_slug(session, article, new.title)
    await session.refresh(article, ["created_at", "updated_at"])
    invalidate_after_commit(session, article_generation(article.slug), ARTICLE_LISTS, TAGS)
    await _publish(session, "article.published", article)
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
    stale = [article_generation(article.slug), ARTICLE_LISTS]
    invalidate_after_commit(session, *stale, *([TAGS] if changes.tag_list is not None else []))
    await _publish(session, "article.updated", article)
    return row


async def delete(session: AsyncSession, *, row: ArticleRow, user: User) -> None:
    if row.article.author_id != user.id and not user.can_moderate:
        raise NotArticleAuthorOrModerator()
    await repository.delete(session, row.article.id)
    invalidate_after_commit(session, article_generation(row.article.slug), ARTICLE_LISTS, TAGS)
    await _publish(session, "article.deleted", row.article)


async def _publish(session: AsyncSession, event_type: str, article: Article, **extra: int) -> None:
    await publish(
        session,
        event_type,
        article_id=article.id,
        author_id=article.author_id,
        slug=article.slug,
        **extra,
    )


async def favorite(session: AsyncSession, *, row: ArticleRow, user: User) -> ArticleRow:
    if await repository.add_favorite(session, user_id=user.id, article_id=row.article.id):
        invalidate_after_commit(session, article_generation(row.article.slug), ARTICLE_LISTS)
        await _publish(session, "article.favorited", row.article, user_id=user.id)
    await session.refresh(row.article, ["favorites_count"])
    return ArticleRow(row.article, favorited=True)


async def unfavorite(session: AsyncSession, *, row: ArticleRow, user: User) -> ArticleRow:
    if await repository.remove_favorite(session, user_id=user.id, article_id=row.article.id):
        invalidate_after_commit(session, article_generation(row.article.slug), ARTICLE_LISTS)
        await _publish(session, "article.unfavorited", row.article, user_id=user.id)
    await session.refresh(row.article, ["favorites_count"])
    return ArticleRow(row.article, favorited=False)


async def tags(session: AsyncSession) -> list[str]:
    return await repository.tag_names_in_use(session)


async def tags_cached(session: AsyncSession, cache: Cache) -> list[str]:
    async def load() -> list[str]:
        return await tags(session)

    names: list[str] = await cache.get_or_load(TAGS_ENTRY, load=load)
    return names


async def get_cached(
    session: AsyncSession, cache: Cache, *, slug: str, viewer: User | None
) -> dict[str, Any]:
    """The article envelope as `viewer` sees it, in wire format (see `list_cached`)."""

    async def load() -> dict[str, Any] | None:
        row = await repository.get_by_slug(session, slug, viewer_id=None)
        if row is None:
            return None
        read = await to_read(session, row, None)
        return {
            "id": row.article.id,
            "authorId": row.article.author_id,
            "article": read.model_dump(mode="json"),
        }

    entry = await cache.get_or_load(article_entry(slug), load=load)
    if entry is None:
        raise ArticleNotFound()
    article: dict[str, Any] = entry["article"]
    if viewer is not None:
        favorited = await repository.favorited_among(session, viewer.id, [entry["id"]])
        followed = await profiles_service.followed_among(
            session, follower=viewer, candidates=[entry["authorId"]]
        )
        article = _as_seen_by(article, favorited=bool(favorited), following=bool(followed))
    return {"article": article}


def _as_seen_by(article: dict[str, Any], *, favorited: bool, following: bool) -> dict[str, Any]:
    """A copy of a cached wire-format article with the viewer's own flags; the entry itself
    may be shared with other requests (the in-process cache hands out its objects)."""
    return {
        **article,
        "favorited": favorited,
        "author": {**article["author"], "following": following},
    }


async def list_cached(
    session: AsyncSession,
    cache: Cache,
    *,
    filters: ArticleFilters,
    viewer: User | None,
    request: PageRequest,
    search: SearchOptions,
) -> dict[str, Any]:
    """A page of articles as `viewer` sees it; the page itself is shared by every caller.

    The result is the response body in wire format (an `ArticleList`, dumped), since a cache
    hit has nothing to validate: it was a model when it was stored.
    """

    async def load() -> dict[str, Any]:
        page = await _page(session, filters=filters, viewer=None, request=request, search=search)
        listing = await _summaries(session, page, None)
        return {
            "ids": [[row.article.id, row.article.author_id] for row in page.rows],
            "listing": listing.model_dump(mode="json"),
        }

    entry = await cache.get_or_load(list_entry(filters, request), load=load)
    listing: dict[str, Any] = entry["listing"]
    ids: list[list[int]] = entry["ids"]
    if viewer is None or not ids:
        return listing
    favorited = await repository.favorited_among(session, viewer.id, [id_ for id_, _ in ids])
    followed = await profiles_service.followed_among(
        session, follower=viewer, candidates={author_id for _, author_id in ids}
    )
    articles = [
        _as_seen_by(article, favorited=id_ in favorited, following=author_id in followed)
        for article, (id_, author_id) in zip(listing["articles"], ids, strict=True)
    ]
    return {**listing, "articles": articles}

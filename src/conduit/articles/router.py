import re
from collections.abc import Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse

from conduit.articles import cursors, search_terms, service
from conduit.articles.dependencies import ArticleBySlug, SlugPath
from conduit.articles.schemas import (
    ArticleEnvelope,
    ArticleList,
    NewArticleEnvelope,
    TagsEnvelope,
    UpdateArticleEnvelope,
)
from conduit.articles.service import PageRequest, SearchOptions
from conduit.platform.cache import CacheDep
from conduit.platform.cached_reads import CachedRead, bounded_int, by_path_text, storable_text
from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.errors import ValidationFailed
from conduit.platform.idempotency import Idempotency
from conduit.platform.schemas import Text
from conduit.platform.settings import Settings
from conduit.users.dependencies import CurrentUser, OptionalUser

router = APIRouter(route_class=AutoCommitRoute)

MAX_OFFSET = 2**31 - 1
DEFAULT_LIMIT = 20
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Number of articles to skip")]
FilterText = Annotated[Text | None, Query(max_length=255)]
Cursor = Annotated[
    str | None,
    Query(
        max_length=cursors.MAX_CURSOR_LENGTH,
        description=(
            "Start after the last article of a previous page: its `nextCursor`. Deep pages cost "
            "the same as the first. Not with `offset`."
        ),
    ),
]
SearchText = Annotated[
    Text | None,
    Query(
        max_length=255,
        description=(
            "Full-text search over title, description and body, best matches first: words, "
            '"quoted phrases", `or`, and `-word` to exclude. Combines with the other filters.'
        ),
    ),
]


def _limit(request: Request, limit: int) -> int:
    maximum: int = request.app.state.settings.max_page_size
    if limit > maximum:
        raise ValidationFailed(f"must be less than or equal to {maximum}", field="limit")
    return limit


def _page_request(request: Request, limit: int, offset: int, cursor: str | None) -> PageRequest:
    if cursor is not None and offset:
        raise ValidationFailed("cannot be combined with offset", field="cursor")
    return PageRequest(limit=_limit(request, limit), offset=offset, cursor=cursor)


def _search_options(request: Request) -> SearchOptions:
    settings: Settings = request.app.state.settings
    return SearchOptions(language=settings.search_language, max_results=settings.search_max_results)


Limit = Annotated[
    int, Query(ge=1, description="Number of articles to return (at most MAX_PAGE_SIZE)")
]


@router.get(
    "/articles/feed",
    tags=["Articles"],
    summary="Recent articles from users you follow",
    response_model=ArticleList,
    response_class=JSONResponse,
)
async def feed(
    request: Request,
    session: SessionDep,
    cache: CacheDep,
    viewer: CurrentUser,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> JSONResponse:
    page = _page_request(request, limit, offset, cursor)
    # Already in wire format, as the list's.
    return JSONResponse(await service.feed(session, cache, viewer=viewer, request=page))


@router.get(
    "/articles",
    tags=["Articles"],
    summary="Recent articles globally",
    response_model=ArticleList,
    response_class=JSONResponse,
)
async def list_articles(
    request: Request,
    session: SessionDep,
    cache: CacheDep,
    viewer: OptionalUser,
    tag: FilterText = None,
    author: FilterText = None,
    favorited: FilterText = None,
    q: SearchText = None,
    limit: Limit = DEFAULT_LIMIT,
    offset: Offset = 0,
    cursor: Cursor = None,
) -> JSONResponse:
    if q is not None and not q.strip():
        raise ValidationFailed("can't be blank", field="q")
    filters = service.ArticleFilters(tag=tag, author=author, favorited=favorited, q=q)
    listing = await service.list_cached(
        session,
        cache,
        filters=filters,
        viewer=viewer,
        request=_page_request(request, limit, offset, cursor),
        search=_search_options(request),
    )
    # Already in wire format: a response model would only validate it again.
    return JSONResponse(listing)


@router.post(
    "/articles", tags=["Articles"], status_code=status.HTTP_201_CREATED, summary="Create an article"
)
async def create_article(
    request: Request,
    body: NewArticleEnvelope,
    session: SessionDep,
    user: CurrentUser,
    idempotency: Idempotency,
) -> ArticleEnvelope:
    language = _search_options(request).language
    row = await service.create(session, author=user, new=body.article, search_language=language)
    envelope = ArticleEnvelope(article=service.to_read(row))
    idempotency.remember(session, envelope, status_code=status.HTTP_201_CREATED)
    return envelope


@router.get(
    "/articles/{slug}",
    tags=["Articles"],
    summary="Get an article",
    response_model=ArticleEnvelope,
    response_class=JSONResponse,
)
async def get_article(
    slug: SlugPath, session: SessionDep, cache: CacheDep, viewer: OptionalUser
) -> JSONResponse:
    return JSONResponse(await service.get_cached(session, cache, slug=slug, viewer=viewer))


@router.put("/articles/{slug}", tags=["Articles"], summary="Update an article")
async def update_article(
    user: CurrentUser, body: UpdateArticleEnvelope, row: ArticleBySlug, session: SessionDep
) -> ArticleEnvelope:
    if not body.article.model_fields_set:
        raise ValidationFailed("must change at least one field", field="article")
    row = await service.update(session, row=row, editor=user, changes=body.article)
    return ArticleEnvelope(article=service.to_read(row))


@router.delete(
    "/articles/{slug}",
    tags=["Articles"],
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete an article",
)
async def delete_article(user: CurrentUser, row: ArticleBySlug, session: SessionDep) -> None:
    await service.delete(session, row=row, user=user)


@router.post("/articles/{slug}/favorite", tags=["Favorites"], summary="Favorite an article")
async def favorite_article(
    user: CurrentUser, row: ArticleBySlug, session: SessionDep
) -> ArticleEnvelope:
    row = await service.favorite(session, row=row, user=user)
    return ArticleEnvelope(article=service.to_read(row))


@router.delete("/articles/{slug}/favorite", tags=["Favorites"], summary="Unfavorite an article")
async def unfavorite_article(
    user: CurrentUser, row: ArticleBySlug, session: SessionDep
) -> ArticleEnvelope:
    row = await service.unfavorite(session, row=row, user=user)
    return ArticleEnvelope(article=service.to_read(row))


@router.get(
    "/tags",
    tags=["Tags"],
    summary="Get tags",
    response_model=TagsEnvelope,
    response_class=JSONResponse,
)
async def get_tags(session: SessionDep, cache: CacheDep) -> JSONResponse:
    return JSONResponse({"tags": await service.tags_cached(session, cache)})


# What the cached-reads layer answers before routing: anonymous calls of the reads above whose
# parameters it can read exactly as the routes do (see `platform.cached_reads`).
_LIST_FILTERS = ("tag", "author", "favorited", "q")
_LIST_PARAMETERS = frozenset({*_LIST_FILTERS, "limit", "offset"})


def _list_address(
    _: re.Match[str], query: Mapping[str, str], settings: Settings
) -> service.ListingAddress | None:
    if not query.keys() <= _LIST_PARAMETERS:
        return None
    if not all(storable_text(query[name]) for name in _LIST_FILTERS if name in query):
        return None
    limit = bounded_int(
        query.get("limit", str(DEFAULT_LIMIT)), minimum=1, maximum=settings.max_page_size
    )
    offset = bounded_int(query.get("offset", "0"), minimum=0, maximum=MAX_OFFSET)
    search = query.get("q")
    if limit is None or offset is None or (search is not None and not search.strip()):
        return None
    terms = None
    if search is not None:
        # Known once this process's route has parsed the search.
        terms = search_terms.known(settings.search_language, search)
        if terms is None:
            return None
    filters = service.ArticleFilters(
        tag=query.get("tag"), author=query.get("author"), favorited=query.get("favorited"), q=search
    )
    return service.listing_address(filters, PageRequest(limit=limit, offset=offset), terms)


def _listing_body(listing: dict[str, Any]) -> Any:
    return listing


def _article_body(entry: dict[str, Any]) -> Any:
    return {"article": entry["article"]}


def _tags_body(names: list[str]) -> Any:
    return {"tags": names}


CACHED_READS = (
    CachedRead(
        re.compile(r"/articles"), "/articles", _list_address, _listing_body, service.peek_listing
    ),
    # /articles/feed is a route of its own, for callers with a token.
    CachedRead(
        re.compile(r"/articles/(?!feed$)(?P<slug>[^/]+)"),
        "/articles/{slug}",
        by_path_text("slug", service.article_entry),
        _article_body,
    ),
    CachedRead(re.compile(r"/tags"), "/tags", lambda *_: service.TAGS_ENTRY, _tags_body),
)

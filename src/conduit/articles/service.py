"""Articles, tags, favorites and the personal feed.

Article reads, anonymous or not, go through the cache (`platform.cache`): an entry holds what
every caller sees, with `favorited` and `following` false, and the caller's own flags are
read per request. Writes invalidate the generations their change touches after commit.

A page of a list is two kinds of entries: the keys of its articles, in order, and each
article's summary. Which articles a list holds changes when one is published, edited or
deleted; what it shows of them changes far more often (every favorite moves a count), and
then only that article's summary is stale, not every list it is on.

The unfiltered list's front pages, where most readers go, are cut from blocks of keys shared by
several pages. A publication only pushes the articles after the newest down by one, so only the
first block is read again after one; each later block also holds the `BLOCK_SLACK` keys before
its own, and a page is cut from it as far down as the publications since it was read (the
difference of the two blocks' totals) have pushed it.

A search's page depends on the search's own words rather than on every list: a publication
makes stale only the searches for the lexemes it holds (see `search_terms`), an edit or a
deletion every search.
"""

import hashlib
import json
from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from conduit.articles import cursors, repository, search_terms, slugs
from conduit.articles.cursors import Position
from conduit.articles.models import Article
from conduit.articles.repository import ArticleRow, KeyPage
from conduit.articles.schemas import (
    ArticleRead,
    ArticleSummary,
    NewArticle,
    UpdateArticle,
)
from conduit.articles.search_terms import SearchTerms
from conduit.platform.cache import Cache, CacheAddress, invalidate_after_commit
from conduit.platform.cached_reads import Peeked, peek_entry
from conduit.platform.errors import Forbidden, NotFound, ValidationFailed
from conduit.platform.jobs.queue import publish
from conduit.profiles import service as profiles_service
from conduit.users import repository as users_repository
from conduit.users.models import User

SLUG_ATTEMPTS = 5

# Cache generations: which articles every list holds (not what it shows of them: see each
# article's own), which ones users have favorited, and the tags in use.
ARTICLE_LISTS = "articles"
# What moves the unfiltered list's articles other than a publication at its head: a deletion.
ARTICLES_REMOVED = "articles:removed"
FAVORITES = "favorites"
TAGS = "tags"
# Which articles any search finds, but for a publication: an edit or a deletion (or a long
# article's publication). A publication changes only the searches for its lexemes.
SEARCHES = "articles:searched"
# A publication holding more lexemes than this (a long article) makes every search stale
# rather than naming thousands of generations for its invalidation to replace.
MOST_LEXEMES_NAMED = 1000
# Part of a cached list's key: a new layout of the entry must not read entries of the old one.
LIST_ENTRY_FORMAT = 4
# The unfiltered list's pages among its newest NEWEST_LISTED articles are cut from blocks of
# LIST_BLOCK keys (when a page lies within one). Deeper pages, the pages across two blocks and
# every filtered list's pages have entries of their own.
LIST_BLOCK = 100
NEWEST_LISTED = 1000
# How many publications a block after the first outlives: it holds as many keys before its own.
# A publication is counted as being above them, true of any whose transaction did not last
# while this many others committed.
BLOCK_SLACK = 50


def article_generation(slug: str) -> str:
    return f"article:{slug}"


def search_generation(lexeme: str) -> str:
    """Which articles the searches for `lexeme` find, as publications change it."""
    return f"search:{lexeme}"


def _search_generations(terms: SearchTerms) -> tuple[str, ...]:
    if terms.excludes:
        # Any new article without the excluded word may match.
        return (ARTICLE_LISTS,)
    return (SEARCHES, *(search_generation(lexeme) for lexeme in terms.lexemes))


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


def summary_entry(slug: str) -> CacheAddress:
    """An article as lists show it (no body), as anyone but its readers' own flags see it."""
    return CacheAddress(
        "article_summary", f"summary:{slug}", (article_generation(slug), profiles_service.AUTHORS)
    )


def _block_entry(index: int, total: int) -> CacheAddress:
    """The keys of block `index` of the unfiltered list (`index * LIST_BLOCK` onwards, and the
    `BLOCK_SLACK` before them after the first block), for readers who know of `total` articles.

    The first block is stale after every publication. A later one is kept under the span of
    `BLOCK_SLACK` totals it was read in, so that a reader finds one read at most
    `BLOCK_SLACK - 1` publications ago; deletions, which move articles the other way, make it
    stale.
    """
    key = f"articles:{LIST_ENTRY_FORMAT}:block:{index}"
    if index == 0:
        return CacheAddress("articles_block", key, (ARTICLE_LISTS,))
    return CacheAddress("articles_block", f"{key}:{total // BLOCK_SLACK}", (ARTICLES_REMOVED,))


def _block_start(index: int) -> int:
    """The offset of a block's first key when it was read."""
    return 0 if index == 0 else index * LIST_BLOCK - BLOCK_SLACK


# What a list's entry holds of an article: `[id, author id, slug, created at]`.
KeyEntry = list[Any]


@dataclass(frozen=True, slots=True)
class ListingAddress:
    """Where a page of a list comes from. `keys` is the page's own entry of its articles' keys,
    or None for a front page of the unfiltered list, cut from the blocks (`offset` and `limit`
    say where). `key` and `generations` are the page's own (the address of its local copies)."""

    name: str
    key: str
    generations: tuple[str, ...]
    keys: CacheAddress | None
    offset: int
    limit: int


# Every field of both, read one by one: `asdict` deep-copies, which was most of the cost of
# finding a cached list page before routing.
_FILTER_FIELDS = tuple(field.name for field in fields(ArticleFilters))
_PAGE_FIELDS = tuple(field.name for field in fields(PageRequest))
_UNFILTERED = ArticleFilters()


def listing_address(
    filters: ArticleFilters, request: PageRequest, terms: SearchTerms | None = None
) -> ListingAddress:
    """Where the page `request` of the list `filters` comes from; a search's needs its `terms`."""
    described = {name: getattr(filters, name) for name in _FILTER_FIELDS}
    described.update((name, getattr(request, name)) for name in _PAGE_FIELDS)
    query = json.dumps(described, sort_keys=True)
    key = f"articles:{LIST_ENTRY_FORMAT}:{hashlib.sha256(query.encode()).hexdigest()[:32]}"
    block, start = divmod(request.offset, LIST_BLOCK)
    generations: tuple[str, ...] = (ARTICLE_LISTS,)
    if filters.q is not None:
        if terms is None:
            raise ValueError("a search's address needs its terms")
        generations = _search_generations(terms)
    if (
        filters == _UNFILTERED
        and request.cursor is None
        and request.offset + request.limit <= NEWEST_LISTED
        and start + request.limit <= LIST_BLOCK
    ):
        if block:
            generations += (ARTICLES_REMOVED,)
        return ListingAddress("articles", key, generations, None, request.offset, request.limit)
    if filters.author is not None or filters.favorited is not None:
        # Who a name belongs to changes with the profile's generations.
        generations += (profiles_service.AUTHORS,)
    if filters.favorited is not None:
        generations += (FAVORITES,)
    own = CacheAddress("articles", key, generations)
    return ListingAddress("articles", key, generations, own, request.offset, request.limit)


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


def to_read(row: ArticleRow) -> ArticleRead:
    return ArticleRead.model_validate(
        {**_summary_fields(row, following=row.following), "body": row.article.body}
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
    request: PageRequest,
    search: SearchOptions,
) -> KeyPage:
    after = None
    if request.cursor is not None:
        after = cursors.decode(request.cursor, ranked=filters.q is not None)
    conditions = await _conditions(session, filters)
    if conditions is None:
        return KeyPage(keys=[], total=0, next_position=None)
    if filters.q is not None:
        return await repository.search_page(
            session,
            search=repository.Search(filters.q, search.language, search.max_results),
            conditions=conditions,
            limit=request.limit,
            offset=request.offset,
            after=after,
        )
    if filters.tag is not None and filters.author is None and filters.favorited is None:
        # A popular tag is on a large share of the articles: its own index orders them.
        return await repository.get_tag_page(
            session,
            tag=filters.tag,
            limit=request.limit,
            offset=request.offset,
            after=after,
        )
    return await repository.get_page(
        session,
        conditions=conditions,
        limit=request.limit,
        offset=request.offset,
        after=after,
    )


async def feed(
    session: AsyncSession, cache: Cache, *, viewer: User, request: PageRequest
) -> dict[str, Any]:
    """Articles by the authors the viewer follows, newest first, from the feed read model: it
    follows follows, unfollows and publications once the worker has handled them. In wire
    format, as `list_cached`; only the summaries come from the cache."""
    after = None if request.cursor is None else cursors.decode(request.cursor, ranked=False)
    page = await repository.get_feed_page(
        session, viewer_id=viewer.id, limit=request.limit, offset=request.offset, after=after
    )
    keys = [_key_entry(key) for key in page.keys]
    return await _listing(session, cache, keys, page.total, _cursor_after(page), viewer)


async def get(session: AsyncSession, slug: str, *, viewer: User | None) -> ArticleRow:
    row = await repository.get_by_slug(session, slug, viewer_id=viewer.id if viewer else None)
    if row is None:
        raise ArticleNotFound()
    return row


def ensure_author(article: Article, user: User) -> None:
    if article.author_id != user.id:
        raise NotArticleAuthor()


async def create(
    session: AsyncSession, *, author: User, new: NewArticle, search_language: str
) -> ArticleRow:
    """Publish `new`, indexed for search under the text search configuration given.

    Its slug is the title's, or the title's with a random suffix when another article has that
    one: the insert itself finds out (no check before it that another writer could outrun).
    """
    tags = await repository.tags_by_name(session, new.tag_list)
    base = slugs.base_slug(new.title)
    candidate = slugs.with_suffix(base) if base in slugs.RESERVED else base
    for _ in range(SLUG_ATTEMPTS):
        inserted = await repository.insert_unless_slug_taken(
            session,
            slug=candidate,
            author=author,
            tags=tags,
            title=new.title,
            description=new.description,
            body=new.body,
            search_language=search_language,
        )
        if inserted is not None:
            break
        candidate = slugs.with_suffix(base)
    else:
        raise ValidationFailed("could not be made unique; try a different title", field="slug")
    article, lexemes = inserted
    searches = (
        [search_generation(lexeme) for lexeme in lexemes]
        if len(lexemes) <= MOST_LEXEMES_NAMED
        else [SEARCHES]
    )
    invalidate_after_commit(
        session, article_generation(article.slug), ARTICLE_LISTS, TAGS, *searches
    )
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
    stale = [article_generation(article.slug), ARTICLE_LISTS, SEARCHES]
    invalidate_after_commit(session, *stale, *([TAGS] if changes.tag_list is not None else []))
    await _publish(session, "article.updated", article)
    return row


async def delete(session: AsyncSession, *, row: ArticleRow, user: User) -> None:
    if row.article.author_id != user.id and not user.can_moderate:
        raise NotArticleAuthorOrModerator()
    await repository.delete(session, row.article.id)
    stale = [
        article_generation(row.article.slug),
        ARTICLE_LISTS,
        ARTICLES_REMOVED,
        SEARCHES,
        TAGS,
    ]
    invalidate_after_commit(session, *stale)
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
    count = await repository.add_favorite(session, user_id=user.id, article_id=row.article.id)
    if count is not None:
        invalidate_after_commit(session, article_generation(row.article.slug), FAVORITES)
        await _publish(session, "article.favorited", row.article, user_id=user.id)
    await _show_favorites_count(session, row.article, count)
    return ArticleRow(row.article, favorited=True, following=row.following)


async def unfavorite(session: AsyncSession, *, row: ArticleRow, user: User) -> ArticleRow:
    count = await repository.remove_favorite(session, user_id=user.id, article_id=row.article.id)
    if count is not None:
        invalidate_after_commit(session, article_generation(row.article.slug), FAVORITES)
        await _publish(session, "article.unfavorited", row.article, user_id=user.id)
    await _show_favorites_count(session, row.article, count)
    return ArticleRow(row.article, favorited=False, following=row.following)


async def _show_favorites_count(session: AsyncSession, article: Article, count: int | None) -> None:
    """The count as the caller's change left it, or, when it changed nothing, as it is now
    (others may have moved it since the article was read)."""
    if count is None:
        await session.refresh(article, ["favorites_count"])
    else:
        # As loaded, not as a change of the caller's to flush.
        set_committed_value(article, "favorites_count", count)


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
        read = to_read(row)
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
        favorited, followed = await repository.favorited_and_followed(
            session, viewer.id, [entry["id"]], [entry["authorId"]]
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
    """A page of articles as `viewer` sees it, in wire format (an `ArticleList`, dumped): a
    cache hit has nothing to validate, since each part was a model when it was stored."""
    terms = None
    if filters.q is not None:
        terms = await parsed_search(session, language=search.language, text=filters.q)
    address = listing_address(filters, request, terms)
    if address.keys is None:
        keys, total, next_cursor = await _front_page(session, cache, address)
    else:

        async def load_keys() -> dict[str, Any]:
            page = await _page(session, filters=filters, request=request, search=search)
            return _keys_entry(page)

        keys, total, next_cursor = _unpacked(await cache.get_or_load(address.keys, load=load_keys))
    return await _listing(session, cache, keys, total, next_cursor, viewer)


async def parsed_search(session: AsyncSession, *, language: str, text: str) -> SearchTerms:
    """The terms of the search `text`: as this process parsed it before, or as PostgreSQL does."""
    terms = search_terms.known(language, text)
    if terms is None:
        query = await repository.search_query_text(session, language=language, text=text)
        terms = search_terms.parsed(query)
        search_terms.remember(language, text, terms)
    return terms


async def _front_page(
    session: AsyncSession, cache: Cache, address: ListingAddress
) -> tuple[list[KeyEntry], int, str | None]:
    """A front page's keys, the list's total and the next page's cursor, from the blocks."""

    async def load_block(index: int) -> dict[str, Any]:
        start = _block_start(index)
        size = (index + 1) * LIST_BLOCK - start
        page = await repository.get_page(session, conditions=[], limit=size, offset=start)
        return _keys_entry(page)

    head = await cache.get_or_load(_block_entry(0, 0), load=lambda: load_block(0))
    index = address.offset // LIST_BLOCK
    block = None
    if index:
        block = await cache.get_or_load(
            _block_entry(index, head["total"]), load=lambda: load_block(index)
        )
    cut = _front_page_of(head, block, address)
    if cut is not None:
        return cut
    # The block was read after a publication that the first block does not count yet (the
    # generations are replaced just after a commit): this page is read on its own.
    page = await repository.get_page(
        session, conditions=[], limit=address.limit, offset=address.offset
    )
    return _unpacked(_keys_entry(page))


def _keys_entry(page: KeyPage) -> dict[str, Any]:
    keys = [_key_entry(key) for key in page.keys]
    return {"keys": keys, "total": page.total, "nextCursor": _cursor_after(page)}


def _unpacked(entry: dict[str, Any]) -> tuple[list[KeyEntry], int, str | None]:
    """A keys entry's keys, the list's total and the next page's cursor."""
    return entry["keys"], entry["total"], entry["nextCursor"]


async def _listing(
    session: AsyncSession,
    cache: Cache,
    keys: list[KeyEntry],
    total: int,
    next_cursor: str | None,
    viewer: User | None,
) -> dict[str, Any]:
    """The page of these articles as `viewer` sees it, from their summaries."""
    addresses = [summary_entry(slug) for _, _, slug, _ in keys]
    slugs = {address.key: key[2] for address, key in zip(addresses, keys, strict=True)}

    async def load(missing: list[CacheAddress]) -> dict[str, dict[str, Any]]:
        articles = await repository.summaries_by_slug(
            session, [slugs[address.key] for address in missing]
        )
        return {summary_entry(article.slug).key: _summary(article) for article in articles}

    summaries = await cache.get_many_or_load(addresses, load=load)
    # An article deleted since its list's keys were read has no summary: it is left out.
    listed = [(key, summary) for key, summary in zip(keys, summaries, strict=True) if summary]
    articles = [summary for _, summary in listed]
    if viewer is not None and listed:
        favorited, followed = await repository.favorited_and_followed(
            session, viewer.id, [key[0] for key, _ in listed], {key[1] for key, _ in listed}
        )
        articles = [
            _as_seen_by(summary, favorited=key[0] in favorited, following=key[1] in followed)
            for key, summary in listed
        ]
    return {"articles": articles, "articlesCount": total, "nextCursor": next_cursor}


def _cursor_after(page: KeyPage) -> str | None:
    return None if page.next_position is None else cursors.encode(page.next_position)


async def peek_listing(cache: Cache, address: ListingAddress) -> Peeked | None:
    """A page of a list as an anonymous caller sees it, when the cache holds all of it."""
    if address.keys is None:
        head = await peek_entry(cache, _block_entry(0, 0))
        if head is None:
            return None
        parts = [head]
        index = address.offset // LIST_BLOCK
        if index:
            block = await peek_entry(cache, _block_entry(index, head.value["total"]))
            if block is None:
                return None
            parts.append(block)
        cut = _front_page_of(head.value, parts[-1].value if index else None, address)
        if cut is None:
            return None
        keys, total, next_cursor = cut
    else:
        entry = await peek_entry(cache, address.keys)
        if entry is None:
            return None
        parts = [entry]
        keys, total, next_cursor = _unpacked(entry.value)
    addresses = [summary_entry(slug) for _, _, slug, _ in keys]
    generations = tuple(dict.fromkeys(g for entry in addresses for g in entry.generations))
    snapshot = cache.changes.copies.snapshot(generations)
    summaries = await cache.peek_many(addresses)
    if summaries is None:
        return None
    listing = {"articles": summaries, "articlesCount": total, "nextCursor": next_cursor}
    for part in reversed(parts):
        generations, snapshot = part.generations + generations, part.snapshot.extended(snapshot)
    return Peeked(listing, generations, snapshot, stale=any(part.stale for part in parts))


def _key_entry(key: repository.ArticleKey) -> KeyEntry:
    return [key.id, key.author_id, key.slug, key.created_at.isoformat()]


def _front_page_of(
    head: dict[str, Any], block: dict[str, Any] | None, address: ListingAddress
) -> tuple[list[KeyEntry], int, str | None] | None:
    """A front page's keys, the list's total and the next page's cursor, from the first block
    and, for a page after it, its own block; None when that block counts more articles than the
    first (read after a publication the first has not seen) or too many fewer."""
    index, start = divmod(address.offset, LIST_BLOCK)
    total: int = head["total"]
    entry, first = head, start
    if block is not None:
        published_since = total - block["total"]
        if not 0 <= published_since <= BLOCK_SLACK:
            return None
        entry, first = block, address.offset - published_since - _block_start(index)
    keys: list[KeyEntry] = entry["keys"]
    end = first + address.limit
    page = keys[first:end]
    next_cursor = None
    if end < len(keys):
        last_id, _, _, created_at = page[-1]
        position = Position(created_at=datetime.fromisoformat(created_at), article_id=last_id)
        next_cursor = cursors.encode(position)
    elif end == len(keys):
        # The page ends with its block: what follows is what follows the block.
        next_cursor = entry["nextCursor"]
    return page, total, next_cursor


def _summary(article: Article) -> dict[str, Any]:
    """What lists show of `article` to anyone (no flags of the reader's), in wire format."""
    shown = _summary_fields(ArticleRow(article, favorited=False), following=False)
    return ArticleSummary.model_validate(shown).model_dump(mode="json")

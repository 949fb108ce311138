"""Keyset pagination: `?cursor=` with the `nextCursor` of the previous page."""

import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.articles import cursors
from conduit.articles.cursors import Position
from conduit.platform.errors import ValidationFailed
from conduit.platform.settings import Settings
from tests.feed.support import expected_feed, get_feed, mode_of, run_feed_jobs
from tests.helpers import (
    Account,
    create_article,
    errors,
    follow,
    list_articles,
    register,
    slugs_of,
)
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio


async def walk(
    client: httpx.AsyncClient, path: str, viewer: Account | None = None, **params: Any
) -> tuple[list[str], list[dict[str, Any]]]:
    """Every slug of a list, page after page by cursor, and the pages themselves."""
    headers = viewer.headers if viewer else {}
    slugs: list[str] = []
    pages: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        slugs += slugs_of(page)
        cursor = page["nextCursor"]
        if cursor is None:
            return slugs, pages
        assert len(pages) < 100, "the cursor does not advance"


class TestArticleList:
    async def test_walks_the_same_articles_as_offsets(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        for index in range(7):
            await create_article(client, author, tagList=["even" if index % 2 else "odd"])
        everything = slugs_of(await list_articles(client, limit=100))

        slugs, pages = await walk(client, "/articles", limit=3)

        assert slugs == everything
        assert [len(page["articles"]) for page in pages] == [3, 3, 1]
        assert all(page["articlesCount"] == 7 for page in pages)

    async def test_composes_with_filters(self, client: httpx.AsyncClient) -> None:
        author, other = await register(client), await register(client)
        for index in range(5):
            await create_article(client, author, tagList=["even" if index % 2 else "odd"])
            await create_article(client, other, tagList=["odd"])
        expected = slugs_of(await list_articles(client, tag="odd", author=author.username))

        slugs, pages = await walk(client, "/articles", tag="odd", author=author.username, limit=2)

        assert slugs == expected
        assert len(slugs) == 3
        assert pages[0]["articlesCount"] == 3

    async def test_walks_a_tag_in_the_tags_own_order(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        author = await register(client)
        slugs = [
            (await create_article(client, author, tagList=["walked"]))["slug"] for _ in range(5)
        ]
        await create_article(client, author, tagList=["other"])
        # The oldest becomes the newest: the tag's copy of the time must follow.
        await session.execute(
            text("UPDATE article SET created_at = now() + interval '1 day' WHERE slug = :slug"),
            {"slug": slugs[0]},
        )

        walked, pages = await walk(client, "/articles", tag="walked", limit=2)

        assert walked == [slugs[0], *reversed(slugs[1:])]
        assert [page["articlesCount"] for page in pages] == [5, 5, 5]
        by_offset = await list_articles(client, tag="walked", limit=2, offset=2)
        assert slugs_of(by_offset) == walked[2:4]

    async def test_an_exactly_full_last_page_has_no_next_cursor(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        for _ in range(4):
            await create_article(client, author)

        _, pages = await walk(client, "/articles", limit=2)

        assert [len(page["articles"]) for page in pages] == [2, 2]

    async def test_publications_between_pages_neither_shift_nor_repeat_them(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        older = [(await create_article(client, author))["slug"] for _ in range(4)]
        first = await list_articles(client, limit=2)
        await create_article(client, author)
        await create_article(client, author)

        second = await list_articles(client, limit=2, cursor=first["nextCursor"])

        assert slugs_of(first) + slugs_of(second) == list(reversed(older))

    async def test_offsets_pages_carry_a_cursor_too(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slugs = [(await create_article(client, author))["slug"] for _ in range(5)]
        by_offset = await list_articles(client, limit=2, offset=1)

        after_it = await list_articles(client, limit=2, cursor=by_offset["nextCursor"])

        assert slugs_of(after_it) == list(reversed(slugs))[3:5]


class TestFeed:
    async def test_walks_the_feed_in_both_fan_out_modes(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        jobs: JobRunner,
        settings: Settings,
    ) -> None:
        settings.feed_fanout_max_followers = 2
        reader = await register(client)
        small, big = await register(client), await register(client)
        for fan in (reader, await register(client), await register(client)):
            await follow(client, fan, big)
        await follow(client, reader, small)
        for index in range(9):
            await create_article(client, small if index % 3 else big)
        await run_feed_jobs(jobs)
        assert await mode_of(session, big) == "read"
        assert await mode_of(session, small) == "write"

        slugs, pages = await walk(client, "/articles/feed", reader, limit=4)

        assert slugs == await expected_feed(session, reader.username)
        assert len(slugs) == 9
        assert all(page["articlesCount"] == 9 for page in pages)
        assert slugs_of(await get_feed(client, reader, limit=100)) == slugs


class TestSearch:
    async def test_walks_the_ranked_matches(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        for index in range(7):
            field = ("title", "description", "body")[index % 3]
            await create_article(client, author, **{field: f"Manticore number {index}"})
        ranked = slugs_of(await list_articles(client, q="manticore", limit=100))

        slugs, pages = await walk(client, "/articles", q="manticore", limit=3)

        assert slugs == ranked
        assert len(slugs) == 7
        assert all(page["articlesCount"] == 7 for page in pages)

    async def test_a_list_cursor_does_not_fit_a_search(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        for _ in range(3):
            await create_article(client, author, title="Wyrm")
        list_cursor = (await list_articles(client, limit=1))["nextCursor"]
        search_cursor = (await list_articles(client, q="wyrm", limit=1))["nextCursor"]

        searched = await client.get("/articles", params={"q": "wyrm", "cursor": list_cursor})
        listed = await client.get("/articles", params={"cursor": search_cursor})

        assert searched.status_code == listed.status_code == 422
        assert set(errors(searched)) == set(errors(listed)) == {"cursor"}


def _encoded(payload: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


class TestRefused:
    @pytest.mark.parametrize(
        "cursor",
        [
            "",
            "not a cursor",
            "%%%",
            "e30",  # {}
            _encoded([1, 2]),
            _encoded({"c": "2026-01-01T00:00:00+00:00"}),
            _encoded({"c": "2026-01-01T00:00:00", "i": 1}),  # no time zone
            _encoded({"c": "yesterday", "i": 1}),
            _encoded({"c": "2026-01-01T00:00:00+00:00", "i": "1"}),
            _encoded({"c": "2026-01-01T00:00:00+00:00", "i": 0}),
            _encoded({"c": "2026-01-01T00:00:00+00:00", "i": 2**63}),
            _encoded({"c": "2026-01-01T00:00:00+00:00", "i": 1, "x": 1}),
            base64.urlsafe_b64encode(b"\xff\xfe").decode(),
            "a" * 201,
        ],
    )
    async def test_a_malformed_cursor_is_422(self, client: httpx.AsyncClient, cursor: str) -> None:
        for path in ("/articles", "/articles/feed"):
            viewer = await register(client)
            response = await client.get(path, params={"cursor": cursor}, headers=viewer.headers)
            assert response.status_code == 422, (path, response.text)
            assert set(errors(response)) == {"cursor"}

    async def test_cursor_and_offset_do_not_combine(self, client: httpx.AsyncClient) -> None:
        cursor = cursors.encode(Position(datetime.now(UTC), 1))
        response = await client.get("/articles", params={"cursor": cursor, "offset": 5})
        assert response.status_code == 422
        assert errors(response) == {"cursor": ["cannot be combined with offset"]}


class TestEncoding:
    def test_round_trips_positions_exactly(self) -> None:
        moment = datetime(2026, 12, 2, 16, 0, 0, 123456, tzinfo=UTC)
        for position in (
            Position(moment, 42),
            Position(moment, 2**63 - 1, rank=0.0607927106320858),
        ):
            cursor = cursors.encode(position)
            assert cursors.decode(cursor, ranked=position.rank is not None) == position
            assert set(cursor) <= set(
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            )
            assert len(cursor) <= cursors.MAX_CURSOR_LENGTH

    @pytest.mark.parametrize("rank", ["NaN", "Infinity", "1e999"])
    def test_refuses_ranks_that_are_not_finite(self, rank: str) -> None:
        raw = f'{{"c": "2026-01-01T00:00:00+00:00", "i": 1, "r": {rank}}}'.encode()
        cursor = base64.urlsafe_b64encode(raw).decode()
        with pytest.raises(ValidationFailed):
            cursors.decode(cursor, ranked=True)

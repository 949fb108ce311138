"""Full-text search: `GET /api/articles?q=`."""

from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from conduit.app import create_app
from conduit.articles import service as articles_service
from conduit.platform.settings import Settings, SettingsError
from tests.articles.test_queries import recorded_statements
from tests.helpers import (
    Account,
    create_article,
    errors,
    favorite,
    list_articles,
    register,
    slugs_of,
)

pytestmark = pytest.mark.anyio


async def search(client: httpx.AsyncClient, q: str, **params: Any) -> dict[str, Any]:
    return await list_articles(client, q=q, **params)


async def publish(client: httpx.AsyncClient, author: Account, **fields: Any) -> str:
    article = await create_article(client, author, **fields)
    slug: str = article["slug"]
    return slug


class TestMatching:
    async def test_finds_words_in_title_description_and_body(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        in_title = await publish(client, author, title="Taming a griffin")
        in_description = await publish(client, author, description="All about griffins")
        in_body = await publish(client, author, body="One day a griffin flew by.")
        await publish(client, author, title="Unrelated", body="Nothing to see")

        listing = await search(client, "griffin")

        assert set(slugs_of(listing)) == {in_title, in_description, in_body}
        assert listing["articlesCount"] == 3

    async def test_stems_english_words(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slug = await publish(client, author, title="Training dragons", body="Dragons learn")

        assert slugs_of(await search(client, "dragon train")) == [slug]

    async def test_ranks_title_above_description_above_body(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        in_title = await publish(client, author, title="Basilisk care")
        in_body = await publish(client, author, body="A basilisk, seen from afar.")
        in_description = await publish(client, author, description="Basilisk facts")

        assert slugs_of(await search(client, "basilisk")) == [in_title, in_description, in_body]

    async def test_equal_ranks_come_newest_first(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slugs = [await publish(client, author, title="Kraken") for _ in range(3)]

        assert slugs_of(await search(client, "kraken")) == list(reversed(slugs))

    @pytest.mark.parametrize(
        ("q", "expected"),
        [
            ('"sea serpent"', {"phrase"}),
            ("serpent -sea", {"serpent-only"}),
            ("wyvern or serpent", {"phrase", "serpent-only", "wyvern", "both-words"}),
            ("sea serpent", {"phrase", "both-words"}),
        ],
    )
    async def test_understands_web_search_syntax(
        self, client: httpx.AsyncClient, q: str, expected: set[str]
    ) -> None:
        author = await register(client)
        bodies = {
            "phrase": "a sea serpent",
            "serpent-only": "a serpent",
            "wyvern": "a wyvern",
            "both-words": "a serpent by the sea",
        }
        slug_of = {}
        for name, body in bodies.items():
            slug_of[await publish(client, author, title=f"Story {name}", body=body)] = name

        assert {slug_of[slug] for slug in slugs_of(await search(client, q))} == expected

    async def test_no_match_and_stop_words_give_an_empty_list(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        await publish(client, author, title="The cat and the hat")

        for q in ("unicorn", "the and", "!!!", "-", '"'):
            assert await search(client, q) == {
                "articles": [],
                "articlesCount": 0,
                "nextCursor": None,
            }, q

    async def test_follows_edits_and_deletions(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slug = await publish(client, author, title="Phoenix rising")
        # Both searched, so both cached, before the edit.
        assert slugs_of(await search(client, "phoenix")) == [slug]
        assert slugs_of(await search(client, "hydra")) == []
        response = await client.put(
            f"/articles/{slug}", json={"article": {"title": "Hydra rising"}}, headers=author.headers
        )
        assert response.status_code == 200

        assert slugs_of(await search(client, "phoenix")) == []
        assert slugs_of(await search(client, "hydra")) == [slug]

        response = await client.delete(f"/articles/{slug}", headers=author.headers)
        assert response.status_code == 204
        assert slugs_of(await search(client, "hydra")) == []


class TestCaching:
    async def test_a_new_article_leaves_cached_the_searches_for_words_it_lacks(
        self, client: httpx.AsyncClient, engine: AsyncEngine
    ) -> None:
        author = await register(client)
        slug = await publish(client, author, title="Manticores at dusk")
        assert slugs_of(await search(client, "manticore")) == [slug]

        await publish(client, author, title="Centaurs at dawn", body="Hooves and arrows")
        with recorded_statements(engine) as statements:
            listing = await search(client, "manticore")

        assert statements == []
        assert slugs_of(listing) == [slug]

    async def test_a_new_article_is_found_at_once_by_searches_for_its_words(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        first = await publish(client, author, title="Taming dragons")
        assert slugs_of(await search(client, "dragons tamed")) == [first]

        # Another form of the words: the same lexemes.
        second = await publish(client, author, title="A tame dragon", body="Very tame")

        listing = await search(client, "dragons tamed")
        assert set(slugs_of(listing)) == {first, second}
        assert listing["articlesCount"] == 2

    async def test_a_long_new_article_makes_every_search_stale(
        self, client: httpx.AsyncClient, engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(articles_service, "MOST_LEXEMES_NAMED", 3)
        author = await register(client)
        slug = await publish(client, author, title="Wendigos")
        assert slugs_of(await search(client, "wendigo")) == [slug]

        await publish(client, author, title="Yetis", body="Snow, tracks, caves and cold")
        with recorded_statements(engine) as statements:
            listing = await search(client, "wendigo")

        assert statements != []
        assert slugs_of(listing) == [slug]

    async def test_a_search_excluding_a_word_finds_new_articles_without_it(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        await publish(client, author, title="Selkies of the sea")
        assert slugs_of(await search(client, "-selkie")) == []

        # Holds none of the search's words, and matches it.
        slug = await publish(client, author, title="Kelpies of the loch")

        assert slugs_of(await search(client, "-selkie")) == [slug]


class TestFilters:
    async def test_combines_with_tag_author_and_favorited(self, client: httpx.AsyncClient) -> None:
        jake, jane, fan = await register(client), await register(client), await register(client)
        jake_tagged = await publish(client, jake, title="Golem lore", tagList=["myth"])
        jake_untagged = await publish(client, jake, title="Golem clay")
        jane_tagged = await publish(client, jane, title="Golem cities", tagList=["myth"])
        await publish(client, jane, title="Other thing", tagList=["myth"])
        await favorite(client, fan, jake_untagged)
        await favorite(client, fan, jane_tagged)

        assert set(slugs_of(await search(client, "golem", tag="myth"))) == {
            jake_tagged,
            jane_tagged,
        }
        assert set(slugs_of(await search(client, "golem", author=jake.username))) == {
            jake_tagged,
            jake_untagged,
        }
        assert set(slugs_of(await search(client, "golem", favorited=fan.username))) == {
            jake_untagged,
            jane_tagged,
        }
        both = await search(client, "golem", tag="myth", author=jane.username)
        assert slugs_of(both) == [jane_tagged]
        assert both["articlesCount"] == 1

    async def test_fills_the_callers_flags(self, client: httpx.AsyncClient) -> None:
        author, reader = await register(client), await register(client)
        slug = await publish(client, author, title="Chimera")
        await favorite(client, reader, slug)
        response = await client.post(f"/profiles/{author.username}/follow", headers=reader.headers)
        assert response.status_code == 200

        [item] = (await list_articles(client, reader, q="chimera"))["articles"]

        assert item["favorited"] is True
        assert item["favoritesCount"] == 1
        assert item["author"]["following"] is True
        assert "body" not in item


class TestLimits:
    async def test_ranks_and_counts_only_the_newest_matches(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        settings.search_max_results = 3
        author = await register(client)
        slugs = [await publish(client, author, title="Sphinx") for _ in range(5)]

        listing = await search(client, "sphinx")

        assert listing["articlesCount"] == 3
        assert slugs_of(listing) == list(reversed(slugs))[:3]

    @pytest.mark.parametrize(
        ("q", "message"),
        [
            ("", "can't be blank"),
            ("   ", "can't be blank"),
            ("x" * 256, "is too long (maximum is 255 characters)"),
            ("a\x00b", "must not contain NUL characters"),
        ],
    )
    async def test_refuses_bad_queries(
        self, client: httpx.AsyncClient, q: str, message: str
    ) -> None:
        response = await client.get("/articles", params={"q": q})
        assert response.status_code == 422
        assert errors(response) == {"q": [message]}


class TestLanguage:
    async def test_new_articles_are_indexed_in_the_configured_language(
        self, client: httpx.AsyncClient, settings: Settings
    ) -> None:
        settings.search_language = "simple"
        author = await register(client)
        slug = await publish(client, author, title="Dragons")

        assert slugs_of(await search(client, "dragon")) == [], (
            "the simple configuration stems nothing"
        )
        assert slugs_of(await search(client, "dragons")) == [slug]

    async def test_an_unknown_language_stops_the_start(self, settings: Settings) -> None:
        settings.search_language = "klingon"
        app: FastAPI = create_app(settings)
        with pytest.raises(SettingsError, match="SEARCH_LANGUAGE=klingon"):
            async with LifespanManager(app):
                pass

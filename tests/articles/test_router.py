import re
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.articles.models import Article, Favorite
from conduit.comments.models import Comment
from tests.helpers import (
    Account,
    create_article,
    errors,
    get_article,
    get_tags,
    list_articles,
    register,
    slugs_of,
    unique_name,
)
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio


TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
ARTICLE_KEYS = {
    "slug",
    "title",
    "description",
    "body",
    "tagList",
    "createdAt",
    "updatedAt",
    "favorited",
    "favoritesCount",
    "author",
}


def parse_timestamp(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


async def get_feed(client: httpx.AsyncClient, viewer: Account, **params: Any) -> dict[str, Any]:
    response = await client.get("/articles/feed", params=params, headers=viewer.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def follow(client: httpx.AsyncClient, fan: Account, celeb: Account) -> None:
    response = await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
    assert response.status_code == 200, response.text


async def unfollow(client: httpx.AsyncClient, fan: Account, celeb: Account) -> None:
    response = await client.delete(f"/profiles/{celeb.username}/follow", headers=fan.headers)
    assert response.status_code == 200, response.text


async def favorite(client: httpx.AsyncClient, fan: Account, slug: str) -> dict[str, Any]:
    response = await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    assert response.status_code == 200, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


async def unfavorite(client: httpx.AsyncClient, fan: Account, slug: str) -> dict[str, Any]:
    response = await client.delete(f"/articles/{slug}/favorite", headers=fan.headers)
    assert response.status_code == 200, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


async def comment_on(client: httpx.AsyncClient, author: Account, slug: str) -> None:
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": "Nice"}}, headers=author.headers
    )
    assert response.status_code == 200, response.text


async def backdate(session: AsyncSession, slug: str, *, days: int) -> None:
    await session.execute(
        update(Article)
        .where(Article.slug == slug)
        .values(
            created_at=Article.created_at - timedelta(days=days),
            updated_at=Article.updated_at - timedelta(days=days),
        )
    )
    await session.commit()


class TestCreate:
    async def test_returns_201_with_all_fields(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        response = await client.post(
            "/articles",
            json={
                "article": {
                    "title": "How to train your dragon",
                    "description": "Ever wonder how?",
                    "body": "You have to believe",
                    "tagList": ["reactjs", "angularjs", "dragons"],
                }
            },
            headers=author.headers,
        )
        assert response.status_code == 201
        article = response.json()["article"]
        assert set(article) == ARTICLE_KEYS
        assert article["slug"] == "how-to-train-your-dragon"
        assert article["title"] == "How to train your dragon"
        assert article["description"] == "Ever wonder how?"
        assert article["body"] == "You have to believe"
        assert article["tagList"] == ["angularjs", "dragons", "reactjs"]
        assert article["favorited"] is False
        assert article["favoritesCount"] == 0
        assert article["author"] == {
            "username": author.username,
            "bio": "",
            "image": "",
            "following": False,
        }

    async def test_timestamps_are_iso_with_milliseconds_and_z(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        article = await create_article(client, author)
        assert TIMESTAMP.match(article["createdAt"]), article["createdAt"]
        assert TIMESTAMP.match(article["updatedAt"]), article["updatedAt"]
        assert parse_timestamp(article["updatedAt"]) >= parse_timestamp(article["createdAt"])
        stored = await get_article(client, article["slug"])
        assert stored["createdAt"] == article["createdAt"]
        assert stored["updatedAt"] == article["updatedAt"]

    async def test_tag_list_is_sorted_and_deduplicated(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(
            client, author, tagList=["zebra", "apple", "zebra", " mango ", "apple", "mango"]
        )
        assert article["tagList"] == ["apple", "mango", "zebra"]
        stored = await get_article(client, article["slug"])
        assert stored["tagList"] == ["apple", "mango", "zebra"]

    async def test_mixed_case_tags_keep_one_order_on_create_and_read(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        article = await create_article(client, author, tagList=["beta", "Beta", "alpha", "Alpha"])
        assert article["tagList"] == ["Alpha", "Beta", "alpha", "beta"]
        stored = await get_article(client, article["slug"])
        assert stored["tagList"] == article["tagList"]

    async def test_tag_limit_counts_distinct_tags(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(client, author, tagList=["same"] * 20 + ["other"])
        assert article["tagList"] == ["other", "same"]

    async def test_tag_list_defaults_to_empty(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(client, author)
        assert article["tagList"] == []

    async def test_tags_are_shared_between_articles(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        first = await create_article(client, author, tagList=["shared", "first"])
        second = await create_article(client, author, tagList=["shared", "second"])
        assert first["tagList"] == ["first", "shared"]
        assert second["tagList"] == ["second", "shared"]
        assert await get_tags(client) == ["shared", "first", "second"]

    async def test_twenty_tags_are_allowed(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        tags = [f"tag{index:02d}" for index in range(20)]
        article = await create_article(client, author, tagList=tags)
        assert article["tagList"] == tags

    async def test_title_and_description_are_trimmed(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(
            client, author, title="  Trimmed title  ", description="\tdescribed\n"
        )
        assert article["title"] == "Trimmed title"
        assert article["description"] == "described"
        assert article["slug"] == "trimmed-title"

    async def test_body_keeps_its_whitespace(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        body = "    indented code\n\nparagraph\n"
        article = await create_article(client, author, body=body)
        assert article["body"] == body

    async def test_ignores_unknown_fields(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(client, author, favoritesCount=99, slug="chosen-slug")
        assert article["favoritesCount"] == 0
        assert article["slug"] != "chosen-slug"

    async def test_requires_auth(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/articles", json={"article": {"title": "t", "description": "d", "body": "b"}}
        )
        assert response.status_code == 401
        assert errors(response)


class TestSlugs:
    async def test_slug_is_made_from_title(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(client, author, title="Hello, World! It's 2024")
        assert article["slug"] == "hello-world-it-s-2024"

    async def test_equal_titles_get_distinct_slugs(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        other = await register(client)
        first = await create_article(client, author, title="Same Title")
        second = await create_article(client, author, title="Same Title")
        third = await create_article(client, other, title="same title")
        slugs = [first["slug"], second["slug"], third["slug"]]
        assert first["slug"] == "same-title"
        assert len(set(slugs)) == 3
        assert all(slug.startswith("same-title") for slug in slugs)
        for slug in slugs:
            assert (await get_article(client, slug))["slug"] == slug

    async def test_slug_is_unchanged_after_title_update(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(client, author, title="Original title")
        response = await client.put(
            f"/articles/{article['slug']}",
            json={"article": {"title": "A completely new title"}},
            headers=author.headers,
        )
        assert response.status_code == 200
        assert response.json()["article"]["slug"] == article["slug"]
        stored = await get_article(client, article["slug"])
        assert stored["title"] == "A completely new title"
        missing = await client.get("/articles/a-completely-new-title")
        assert missing.status_code == 404

    @pytest.mark.parametrize("title", ["feed", "Feed", " FEED "])
    async def test_title_feed_does_not_take_the_feed_route(
        self, client: httpx.AsyncClient, title: str
    ) -> None:
        author = await register(client)
        article = await create_article(client, author, title=title)
        assert article["slug"] != "feed"
        assert article["slug"].startswith("feed-")
        assert (await get_article(client, article["slug"]))["title"] == title.strip()

    async def test_title_of_only_punctuation_gets_a_slug(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        first = await create_article(client, author, title="!!!")
        second = await create_article(client, author, title="?!.,")
        assert first["slug"]
        assert second["slug"]
        assert first["slug"] != second["slug"]
        assert (await get_article(client, first["slug"]))["title"] == "!!!"
        assert (await get_article(client, second["slug"]))["title"] == "?!.,"

    async def test_non_ascii_title_gets_a_readable_slug(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        article = await create_article(client, author, title="Über café")
        assert article["slug"] == "uber-cafe"

    async def test_long_title_gets_a_bounded_slug(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        first = await create_article(client, author, title="word " * 51)
        second = await create_article(client, author, title="word " * 51)
        assert 0 < len(first["slug"]) <= 255
        assert first["slug"] != second["slug"]
        assert (await get_article(client, second["slug"]))["slug"] == second["slug"]


VALID_ARTICLE = {"title": "A title", "description": "A description", "body": "A body"}


def article_with(**changes: Any) -> dict[str, Any]:
    article = {**VALID_ARTICLE, **changes}
    return {key: value for key, value in article.items() if value is not ...}


class TestCreateValidation:
    @pytest.mark.parametrize(
        ("article", "field", "message"),
        [
            (article_with(title=...), "title", "can't be blank"),
            (article_with(description=...), "description", "can't be blank"),
            (article_with(body=...), "body", "can't be blank"),
            (article_with(title=""), "title", "can't be blank"),
            (article_with(title="   "), "title", "can't be blank"),
            (article_with(description=""), "description", "can't be blank"),
            (article_with(description=" \n "), "description", "can't be blank"),
            (article_with(body=""), "body", "can't be blank"),
            (article_with(body="   "), "body", "can't be blank"),
            (article_with(body="\n\t\n"), "body", "can't be blank"),
            (article_with(title=42), "title", "must be a string"),
            (article_with(description=["d"]), "description", "must be a string"),
            (article_with(body={"text": "b"}), "body", "must be a string"),
            (article_with(title=None), "title", "must be a string"),
            (article_with(tagList="dragons"), "tagList", "must be a list"),
            (article_with(tagList=[1]), "tagList", "must be a string"),
            (article_with(tagList=[""]), "tagList", "can't be blank"),
            (article_with(tagList=["ok", "  "]), "tagList", "can't be blank"),
            (
                article_with(title="t" * 256),
                "title",
                "is too long (maximum is 255 characters)",
            ),
            (
                article_with(description="d" * 1001),
                "description",
                "is too long (maximum is 1000 characters)",
            ),
            (
                article_with(body="b" * 100_001),
                "body",
                "is too long (maximum is 100000 characters)",
            ),
            (
                article_with(tagList=["t" * 65]),
                "tagList",
                "is too long (maximum is 64 characters)",
            ),
            (
                article_with(tagList=[f"tag{index}" for index in range(21)]),
                "tagList",
                "has too many items (maximum is 20)",
            ),
            (article_with(title="a\u0000b"), "title", "must not contain NUL characters"),
            (
                article_with(description="a\u0000b"),
                "description",
                "must not contain NUL characters",
            ),
            (article_with(body="a\u0000b"), "body", "must not contain NUL characters"),
            (article_with(tagList=["a\u0000b"]), "tagList", "must not contain NUL characters"),
        ],
    )
    async def test_invalid_article_is_422(
        self, client: httpx.AsyncClient, article: dict[str, Any], field: str, message: str
    ) -> None:
        author = await register(client)
        response = await client.post("/articles", json={"article": article}, headers=author.headers)
        assert response.status_code == 422
        assert message in errors(response)[field]
        listing = await list_articles(client)
        assert listing["articlesCount"] == 0

    async def test_every_invalid_field_is_reported(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        response = await client.post(
            "/articles", json={"article": {"title": ""}}, headers=author.headers
        )
        assert response.status_code == 422
        assert errors(response) == {
            "title": ["can't be blank"],
            "description": ["can't be blank"],
            "body": ["can't be blank"],
        }

    @pytest.mark.parametrize("body", [{}, {"article": None}, {"article": "x"}, [], "null"])
    async def test_wrong_envelope_is_422(self, client: httpx.AsyncClient, body: object) -> None:
        author = await register(client)
        response = await client.post("/articles", json=body, headers=author.headers)
        assert response.status_code == 422
        assert errors(response)

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        response = await client.post(
            "/articles",
            content=b'{"article": {',
            headers={**author.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert "body" in errors(response)


class TestGet:
    async def test_anonymous_read(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["t"])
        response = await client.get(f"/articles/{created['slug']}")
        assert response.status_code == 200
        assert response.json() == {"article": created}

    async def test_read_with_auth_fills_favorited_and_following(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        reader = await register(client)
        created = await create_article(client, author)
        before = await get_article(client, created["slug"], reader)
        assert before["favorited"] is False
        assert before["author"]["following"] is False
        await follow(client, reader, author)
        await favorite(client, reader, created["slug"])
        after = await get_article(client, created["slug"], reader)
        assert after["favorited"] is True
        assert after["favoritesCount"] == 1
        assert after["author"]["following"] is True
        anonymous = await get_article(client, created["slug"])
        assert anonymous["favorited"] is False
        assert anonymous["favoritesCount"] == 1
        assert anonymous["author"]["following"] is False

    async def test_author_profile_reflects_current_bio_and_image(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        created = await create_article(client, author)
        await client.put(
            "/user",
            json={"user": {"bio": "New bio", "image": "https://i.example.com/a.png"}},
            headers=author.headers,
        )
        article = await get_article(client, created["slug"])
        assert article["author"]["bio"] == "New bio"
        assert article["author"]["image"] == "https://i.example.com/a.png"

    async def test_unknown_slug_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/articles/no-such-article")
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}

    @pytest.mark.parametrize(
        ("slug", "message"),
        [
            ("a%00b", "must not contain NUL characters"),
            ("s" * 256, "is too long (maximum is 255 characters)"),
        ],
    )
    async def test_invalid_slug_is_422(
        self, client: httpx.AsyncClient, slug: str, message: str
    ) -> None:
        response = await client.get(f"/articles/{slug}")
        assert response.status_code == 422
        assert errors(response) == {"slug": [message]}

    async def test_unknown_slug_with_auth_is_404(self, client: httpx.AsyncClient) -> None:
        reader = await register(client)
        response = await client.get("/articles/no-such-article", headers=reader.headers)
        assert response.status_code == 404


class TestUpdate:
    async def test_author_changes_fields(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["keep"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"title": "New title", "description": "New d", "body": "New b"}},
            headers=author.headers,
        )
        assert response.status_code == 200
        article = response.json()["article"]
        assert set(article) == ARTICLE_KEYS
        assert article["title"] == "New title"
        assert article["description"] == "New d"
        assert article["body"] == "New b"
        assert article["tagList"] == ["keep"]
        assert article["slug"] == created["slug"]
        assert article["createdAt"] == created["createdAt"]
        assert article["author"]["username"] == author.username
        assert await get_article(client, created["slug"]) == article

    async def test_null_fields_mean_unchanged(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["kept"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={
                "article": {
                    "title": None,
                    "description": None,
                    "body": "Only body",
                    "tagList": None,
                }
            },
            headers=author.headers,
        )
        assert response.status_code == 200
        article = response.json()["article"]
        assert article["title"] == created["title"]
        assert article["description"] == created["description"]
        assert article["body"] == "Only body"
        assert article["tagList"] == ["kept"]

    async def test_omitted_fields_are_unchanged(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["kept"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"description": "Only description"}},
            headers=author.headers,
        )
        article = response.json()["article"]
        assert article["title"] == created["title"]
        assert article["body"] == created["body"]
        assert article["description"] == "Only description"
        assert article["tagList"] == ["kept"]

    async def test_tag_list_is_replaced(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["old", "both"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"tagList": ["new", "both", "new"]}},
            headers=author.headers,
        )
        assert response.status_code == 200
        assert response.json()["article"]["tagList"] == ["both", "new"]
        assert (await get_article(client, created["slug"]))["tagList"] == ["both", "new"]
        assert sorted(await get_tags(client)) == ["both", "new"]
        by_old_tag = await list_articles(client, tag="old")
        assert by_old_tag == {"articles": [], "articlesCount": 0, "nextCursor": None}

    async def test_empty_tag_list_clears_tags(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["gone"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"tagList": []}},
            headers=author.headers,
        )
        assert response.json()["article"]["tagList"] == []
        assert await get_tags(client) == []

    async def test_updated_at_moves_forward(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        author = await register(client)
        created = await create_article(client, author)
        await backdate(session, created["slug"], days=1)
        before = await get_article(client, created["slug"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"body": "Edited"}},
            headers=author.headers,
        )
        article = response.json()["article"]
        assert TIMESTAMP.match(article["updatedAt"])
        assert article["createdAt"] == before["createdAt"]
        assert article["updatedAt"] != before["updatedAt"]
        assert parse_timestamp(article["updatedAt"]) > parse_timestamp(before["updatedAt"])
        assert parse_timestamp(article["updatedAt"]) >= parse_timestamp(article["createdAt"])
        assert (await get_article(client, created["slug"]))["updatedAt"] == article["updatedAt"]

    async def test_update_keeps_favorites(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        created = await create_article(client, author)
        await favorite(client, fan, created["slug"])
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"title": "Renamed"}},
            headers=author.headers,
        )
        assert response.json()["article"]["favoritesCount"] == 1
        assert response.json()["article"]["favorited"] is False
        assert (await get_article(client, created["slug"], fan))["favorited"] is True

    async def test_other_user_is_403(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        intruder = await register(client)
        created = await create_article(client, author)
        response = await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"title": "Hijacked"}},
            headers=intruder.headers,
        )
        assert response.status_code == 403
        assert errors(response) == {"article": ["can only be changed by its author"]}
        assert (await get_article(client, created["slug"]))["title"] == created["title"]

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.put(
            f"/articles/{created['slug']}", json={"article": {"title": "Anonymous edit"}}
        )
        assert response.status_code == 401
        assert (await get_article(client, created["slug"]))["title"] == created["title"]

    async def test_unknown_slug_is_404(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        response = await client.put(
            "/articles/no-such-article",
            json={"article": {"title": "Whatever"}},
            headers=author.headers,
        )
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}

    async def test_empty_article_is_422(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.put(
            f"/articles/{created['slug']}", json={"article": {}}, headers=author.headers
        )
        assert response.status_code == 422
        assert errors(response) == {"article": ["must change at least one field"]}

    @pytest.mark.parametrize("body", [{}, {"article": None}, {"article": "x"}, []])
    async def test_wrong_envelope_is_422(self, client: httpx.AsyncClient, body: object) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.put(
            f"/articles/{created['slug']}", json=body, headers=author.headers
        )
        assert response.status_code == 422
        assert errors(response)

    @pytest.mark.parametrize(
        ("article", "field", "message"),
        [
            ({"title": ""}, "title", "can't be blank"),
            ({"title": "  "}, "title", "can't be blank"),
            ({"description": ""}, "description", "can't be blank"),
            ({"body": ""}, "body", "can't be blank"),
            ({"body": "  \n"}, "body", "can't be blank"),
            ({"title": 42}, "title", "must be a string"),
            ({"title": "t" * 256}, "title", "is too long (maximum is 255 characters)"),
            ({"tagList": [""]}, "tagList", "can't be blank"),
            ({"tagList": "x"}, "tagList", "must be a list"),
            (
                {"tagList": [f"t{index}" for index in range(21)]},
                "tagList",
                "has too many items (maximum is 20)",
            ),
            ({"body": "a\u0000b"}, "body", "must not contain NUL characters"),
        ],
    )
    async def test_invalid_changes_are_422(
        self, client: httpx.AsyncClient, article: dict[str, Any], field: str, message: str
    ) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.put(
            f"/articles/{created['slug']}", json={"article": article}, headers=author.headers
        )
        assert response.status_code == 422
        assert message in errors(response)[field]
        assert await get_article(client, created["slug"]) == created


class TestDelete:
    async def test_author_deletes_with_204_and_empty_body(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.delete(f"/articles/{created['slug']}", headers=author.headers)
        assert response.status_code == 204
        assert response.content == b""
        missing = await client.get(f"/articles/{created['slug']}")
        assert missing.status_code == 404
        assert (await list_articles(client))["articlesCount"] == 0

    async def test_deleting_twice_is_404(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author)
        await client.delete(f"/articles/{created['slug']}", headers=author.headers)
        again = await client.delete(f"/articles/{created['slug']}", headers=author.headers)
        assert again.status_code == 404

    async def test_other_user_is_403(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        intruder = await register(client)
        created = await create_article(client, author)
        response = await client.delete(f"/articles/{created['slug']}", headers=intruder.headers)
        assert response.status_code == 403
        assert errors(response) == {"article": ["can only be deleted by its author or a moderator"]}
        assert (await get_article(client, created["slug"]))["slug"] == created["slug"]

    async def test_anonymous_is_401(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.delete(f"/articles/{created['slug']}")
        assert response.status_code == 401
        assert (await get_article(client, created["slug"]))["slug"] == created["slug"]

    async def test_unknown_slug_is_404(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        response = await client.delete("/articles/no-such-article", headers=author.headers)
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}

    async def test_comments_and_favorites_go_with_it(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        author = await register(client)
        fan = await register(client)
        doomed = await create_article(client, author)
        survivor = await create_article(client, author)
        for slug in (doomed["slug"], survivor["slug"]):
            await favorite(client, fan, slug)
            await comment_on(client, fan, slug)
        response = await client.delete(f"/articles/{doomed['slug']}", headers=author.headers)
        assert response.status_code == 204
        favorites = await list_articles(client, favorited=fan.username)
        assert slugs_of(favorites) == [survivor["slug"]]
        assert favorites["articlesCount"] == 1
        comments = await client.get(f"/articles/{doomed['slug']}/comments")
        assert comments.status_code == 404
        assert await session.scalar(select(func.count()).select_from(Comment)) == 1
        assert await session.scalar(select(func.count()).select_from(Favorite)) == 1
        remaining = await client.get(f"/articles/{survivor['slug']}/comments")
        assert len(remaining.json()["comments"]) == 1

    async def test_slug_can_be_reused_after_delete(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, title="Phoenix")
        await client.delete(f"/articles/{created['slug']}", headers=author.headers)
        reborn = await create_article(client, author, title="Phoenix")
        assert reborn["slug"] == "phoenix"
        assert reborn["favoritesCount"] == 0


class TestList:
    async def test_empty(self, client: httpx.AsyncClient) -> None:
        assert await list_articles(client) == {
            "articles": [],
            "articlesCount": 0,
            "nextCursor": None,
        }

    async def test_newest_first(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = [await create_article(client, author) for _ in range(3)]
        listing = await list_articles(client)
        assert slugs_of(listing) == [article["slug"] for article in reversed(created)]
        assert listing["articlesCount"] == 3

    async def test_orders_by_creation_time(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        author = await register(client)
        oldest = await create_article(client, author)
        middle = await create_article(client, author)
        newest = await create_article(client, author)
        await backdate(session, oldest["slug"], days=2)
        await backdate(session, middle["slug"], days=1)
        await backdate(session, newest["slug"], days=3)
        listing = await list_articles(client)
        assert slugs_of(listing) == [middle["slug"], oldest["slug"], newest["slug"]]

    async def test_items_have_no_body(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["b", "a"])
        listing = await list_articles(client)
        [item] = listing["articles"]
        assert "body" not in item
        assert set(item) == ARTICLE_KEYS - {"body"}
        assert item == {key: value for key, value in created.items() if key != "body"}

    async def test_count_is_all_matches_not_page_length(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        for _ in range(5):
            await create_article(client, author)
        listing = await list_articles(client, limit=2)
        assert len(listing["articles"]) == 2
        assert listing["articlesCount"] == 5

    async def test_limit_and_offset_page_through(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = [await create_article(client, author) for _ in range(5)]
        newest_first = [article["slug"] for article in reversed(created)]
        pages = [
            slugs_of(await list_articles(client, limit=2, offset=offset)) for offset in (0, 2, 4)
        ]
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]
        beyond = await list_articles(client, limit=2, offset=10)
        assert beyond == {"articles": [], "articlesCount": 5, "nextCursor": None}

    async def test_default_limit_is_20(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        for _ in range(21):
            await create_article(client, author)
        listing = await list_articles(client)
        assert len(listing["articles"]) == 20
        assert listing["articlesCount"] == 21
        assert len((await list_articles(client, limit=100))["articles"]) == 21

    @pytest.mark.parametrize(
        ("params", "field", "message"),
        [
            ({"limit": 0}, "limit", "must be greater than or equal to 1"),
            ({"limit": -1}, "limit", "must be greater than or equal to 1"),
            ({"limit": 101}, "limit", "must be less than or equal to 100"),
            ({"limit": "ten"}, "limit", "must be an integer"),
            ({"limit": "1.5"}, "limit", "must be an integer"),
            ({"offset": -1}, "offset", "must be greater than or equal to 0"),
            ({"offset": "abc"}, "offset", "must be an integer"),
            ({"offset": "2.5"}, "offset", "must be an integer"),
            ({"offset": 2**31}, "offset", "must be less than or equal to 2147483647"),
        ],
    )
    async def test_bad_paging_is_422(
        self, client: httpx.AsyncClient, params: dict[str, Any], field: str, message: str
    ) -> None:
        response = await client.get("/articles", params=params)
        assert response.status_code == 422
        assert errors(response) == {field: [message]}

    async def test_filter_by_tag(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        dragons = await create_article(client, author, tagList=["dragons", "training"])
        await create_article(client, author, tagList=["training"])
        await create_article(client, author)
        listing = await list_articles(client, tag="dragons")
        assert slugs_of(listing) == [dragons["slug"]]
        assert listing["articlesCount"] == 1
        assert listing["articles"][0]["tagList"] == ["dragons", "training"]
        assert (await list_articles(client, tag="training"))["articlesCount"] == 2

    async def test_filter_by_author(self, client: httpx.AsyncClient) -> None:
        jake = await register(client)
        other = await register(client)
        first = await create_article(client, jake)
        await create_article(client, other)
        second = await create_article(client, jake)
        listing = await list_articles(client, author=jake.username)
        assert slugs_of(listing) == [second["slug"], first["slug"]]
        assert listing["articlesCount"] == 2

    async def test_author_filter_is_case_insensitive(self, client: httpx.AsyncClient) -> None:
        author = await register(client, unique_name("CasedAuthor"))
        created = await create_article(client, author)
        listing = await list_articles(client, author=author.username.lower())
        assert slugs_of(listing) == [created["slug"]]

    async def test_filter_by_favorited(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        other_fan = await register(client)
        liked = await create_article(client, author)
        liked_by_other = await create_article(client, author)
        await create_article(client, author)
        await favorite(client, fan, liked["slug"])
        await favorite(client, other_fan, liked_by_other["slug"])
        listing = await list_articles(client, favorited=fan.username)
        assert slugs_of(listing) == [liked["slug"]]
        assert listing["articlesCount"] == 1
        assert listing["articles"][0]["favorited"] is False
        assert listing["articles"][0]["favoritesCount"] == 1

    async def test_combined_filters(self, client: httpx.AsyncClient) -> None:
        jake = await register(client)
        jane = await register(client)
        fan = await register(client)
        jake_tagged = await create_article(client, jake, tagList=["x"])
        jake_untagged = await create_article(client, jake)
        jane_tagged = await create_article(client, jane, tagList=["x"])
        for article in (jake_tagged, jake_untagged, jane_tagged):
            await favorite(client, fan, article["slug"])
        tag_and_author = await list_articles(client, tag="x", author=jake.username)
        assert slugs_of(tag_and_author) == [jake_tagged["slug"]]
        assert tag_and_author["articlesCount"] == 1
        author_and_favorited = await list_articles(
            client, author=jake.username, favorited=fan.username
        )
        assert slugs_of(author_and_favorited) == [jake_untagged["slug"], jake_tagged["slug"]]
        tag_and_favorited = await list_articles(client, tag="x", favorited=fan.username)
        assert slugs_of(tag_and_favorited) == [jane_tagged["slug"], jake_tagged["slug"]]
        all_three = await list_articles(
            client, tag="x", author=jane.username, favorited=fan.username
        )
        assert slugs_of(all_three) == [jane_tagged["slug"]]
        nothing = await list_articles(
            client, tag="x", author=jane.username, favorited=jake.username
        )
        assert nothing == {"articles": [], "articlesCount": 0, "nextCursor": None}

    @pytest.mark.parametrize("filter_name", ["author", "favorited", "tag"])
    async def test_unknown_filter_value_gives_empty_list(
        self, client: httpx.AsyncClient, filter_name: str
    ) -> None:
        author = await register(client)
        await create_article(client, author, tagList=["known"])
        response = await client.get("/articles", params={filter_name: "nobody-knows-this"})
        assert response.status_code == 200
        assert response.json() == {"articles": [], "articlesCount": 0, "nextCursor": None}

    async def test_flags_are_filled_for_the_caller(self, client: httpx.AsyncClient) -> None:
        followed = await register(client)
        stranger = await register(client)
        caller = await register(client)
        followed_liked = await create_article(client, followed)
        followed_plain = await create_article(client, followed)
        stranger_liked = await create_article(client, stranger)
        stranger_plain = await create_article(client, stranger)
        own = await create_article(client, caller)
        await follow(client, caller, followed)
        await favorite(client, caller, followed_liked["slug"])
        await favorite(client, caller, stranger_liked["slug"])
        await favorite(client, followed, stranger_liked["slug"])
        listing = await list_articles(client, caller)
        flags = {
            item["slug"]: (item["favorited"], item["favoritesCount"], item["author"]["following"])
            for item in listing["articles"]
        }
        assert flags == {
            followed_liked["slug"]: (True, 1, True),
            followed_plain["slug"]: (False, 0, True),
            stranger_liked["slug"]: (True, 2, False),
            stranger_plain["slug"]: (False, 0, False),
            own["slug"]: (False, 0, False),
        }
        anonymous = await list_articles(client)
        assert not any(item["favorited"] for item in anonymous["articles"])
        assert not any(item["author"]["following"] for item in anonymous["articles"])

    @pytest.mark.parametrize("filter_name", ["author", "favorited", "tag"])
    async def test_filter_value_that_is_too_long_is_422(
        self, client: httpx.AsyncClient, filter_name: str
    ) -> None:
        response = await client.get("/articles", params={filter_name: "t" * 256})
        assert response.status_code == 422
        assert errors(response) == {filter_name: ["is too long (maximum is 255 characters)"]}

    @pytest.mark.parametrize("filter_name", ["author", "favorited", "tag"])
    async def test_filter_value_with_nul_is_422(
        self, client: httpx.AsyncClient, filter_name: str
    ) -> None:
        response = await client.get("/articles", params={filter_name: "a\u0000b"})
        assert response.status_code == 422
        assert errors(response) == {filter_name: ["must not contain NUL characters"]}


class TestFeed:
    async def test_requires_auth(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/articles/feed")
        assert response.status_code == 401
        assert errors(response)

    async def test_only_followed_authors_newest_first(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        reader = await register(client)
        alice = await register(client)
        bob = await register(client)
        carol = await register(client)
        await follow(client, reader, alice)
        await follow(client, reader, bob)
        alice_first = await create_article(client, alice)
        await create_article(client, carol)
        bob_first = await create_article(client, bob)
        await create_article(client, reader)
        alice_second = await create_article(client, alice)
        await jobs.run_all()
        feed = await get_feed(client, reader)
        assert slugs_of(feed) == [alice_second["slug"], bob_first["slug"], alice_first["slug"]]
        assert feed["articlesCount"] == 3
        assert all(item["author"]["following"] is True for item in feed["articles"])
        assert all("body" not in item for item in feed["articles"])

    async def test_feed_fills_favorited(self, client: httpx.AsyncClient, jobs: JobRunner) -> None:
        reader = await register(client)
        author = await register(client)
        await follow(client, reader, author)
        liked = await create_article(client, author)
        plain = await create_article(client, author)
        await favorite(client, reader, liked["slug"])
        await jobs.run_all()
        feed = await get_feed(client, reader)
        flags = {item["slug"]: item["favorited"] for item in feed["articles"]}
        assert flags == {liked["slug"]: True, plain["slug"]: False}

    async def test_empty_feed(self, client: httpx.AsyncClient, jobs: JobRunner) -> None:
        reader = await register(client)
        author = await register(client)
        await create_article(client, author)
        await jobs.run_all()
        assert await get_feed(client, reader) == {
            "articles": [],
            "articlesCount": 0,
            "nextCursor": None,
        }
        quiet = await register(client)
        await follow(client, reader, quiet)
        await jobs.run_all()
        assert await get_feed(client, reader) == {
            "articles": [],
            "articlesCount": 0,
            "nextCursor": None,
        }

    async def test_unfollow_removes_articles(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        reader = await register(client)
        kept = await register(client)
        dropped = await register(client)
        await follow(client, reader, kept)
        await follow(client, reader, dropped)
        kept_article = await create_article(client, kept)
        await create_article(client, dropped)
        await jobs.run_all()
        assert (await get_feed(client, reader))["articlesCount"] == 2
        await unfollow(client, reader, dropped)
        await jobs.run_all()
        feed = await get_feed(client, reader)
        assert slugs_of(feed) == [kept_article["slug"]]
        assert feed["articlesCount"] == 1

    async def test_paging(self, client: httpx.AsyncClient, jobs: JobRunner) -> None:
        reader = await register(client)
        author = await register(client)
        await follow(client, reader, author)
        created = [await create_article(client, author) for _ in range(3)]
        await jobs.run_all()
        feed = await get_feed(client, reader, limit=1, offset=1)
        assert slugs_of(feed) == [created[1]["slug"]]
        assert feed["articlesCount"] == 3

    @pytest.mark.parametrize(
        "params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"offset": "x"}]
    )
    async def test_bad_paging_is_422(
        self, client: httpx.AsyncClient, params: dict[str, Any]
    ) -> None:
        reader = await register(client)
        response = await client.get("/articles/feed", params=params, headers=reader.headers)
        assert response.status_code == 422
        assert errors(response)


class TestFavorite:
    async def test_favorite_sets_flag_and_count(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        created = await create_article(client, author)
        article = await favorite(client, fan, created["slug"])
        assert set(article) == ARTICLE_KEYS
        assert article["favorited"] is True
        assert article["favoritesCount"] == 1
        assert article["slug"] == created["slug"]
        assert article["body"] == created["body"]
        stored = await get_article(client, created["slug"], fan)
        assert stored["favorited"] is True
        assert stored["favoritesCount"] == 1

    async def test_favorite_is_idempotent(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        created = await create_article(client, author)
        await favorite(client, fan, created["slug"])
        again = await favorite(client, fan, created["slug"])
        assert again["favorited"] is True
        assert again["favoritesCount"] == 1

    async def test_unfavorite_clears_flag_and_count(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        created = await create_article(client, author)
        await favorite(client, fan, created["slug"])
        article = await unfavorite(client, fan, created["slug"])
        assert article["favorited"] is False
        assert article["favoritesCount"] == 0
        assert (await get_article(client, created["slug"], fan))["favorited"] is False

    async def test_unfavorite_is_idempotent(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        other_fan = await register(client)
        created = await create_article(client, author)
        await favorite(client, other_fan, created["slug"])
        never = await unfavorite(client, fan, created["slug"])
        assert never["favorited"] is False
        assert never["favoritesCount"] == 1
        await favorite(client, fan, created["slug"])
        await unfavorite(client, fan, created["slug"])
        again = await unfavorite(client, fan, created["slug"])
        assert again["favoritesCount"] == 1

    async def test_counts_with_several_users(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fans = [await register(client) for _ in range(3)]
        created = await create_article(client, author)
        counts = [(await favorite(client, fan, created["slug"]))["favoritesCount"] for fan in fans]
        assert counts == [1, 2, 3]
        after_unfavorite = await unfavorite(client, fans[0], created["slug"])
        assert after_unfavorite["favoritesCount"] == 2
        assert after_unfavorite["favorited"] is False
        views = [await get_article(client, created["slug"], fan) for fan in fans]
        assert [view["favorited"] for view in views] == [False, True, True]
        assert {view["favoritesCount"] for view in views} == {2}
        anonymous = await get_article(client, created["slug"])
        assert anonymous["favoritesCount"] == 2
        assert anonymous["favorited"] is False
        listing = await list_articles(client, fans[1])
        assert listing["articles"][0]["favoritesCount"] == 2
        assert listing["articles"][0]["favorited"] is True

    async def test_author_can_favorite_own_article(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author)
        article = await favorite(client, author, created["slug"])
        assert article["favorited"] is True
        assert article["favoritesCount"] == 1

    async def test_response_shows_following_author(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        fan = await register(client)
        await follow(client, fan, author)
        created = await create_article(client, author)
        assert (await favorite(client, fan, created["slug"]))["author"]["following"] is True
        assert (await unfavorite(client, fan, created["slug"]))["author"]["following"] is True

    @pytest.mark.parametrize("method", ["POST", "DELETE"])
    async def test_requires_auth(self, client: httpx.AsyncClient, method: str) -> None:
        author = await register(client)
        created = await create_article(client, author)
        response = await client.request(method, f"/articles/{created['slug']}/favorite")
        assert response.status_code == 401
        assert (await get_article(client, created["slug"]))["favoritesCount"] == 0

    @pytest.mark.parametrize("method", ["POST", "DELETE"])
    async def test_unknown_slug_is_404(self, client: httpx.AsyncClient, method: str) -> None:
        fan = await register(client)
        response = await client.request(
            method, "/articles/no-such-article/favorite", headers=fan.headers
        )
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}


class TestTags:
    async def test_empty(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/tags")
        assert response.status_code == 200
        assert response.json() == {"tags": []}

    async def test_most_used_first(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        await create_article(client, author, tagList=["rare", "common"])
        await create_article(client, author, tagList=["medium", "common"])
        await create_article(client, author, tagList=["common", "medium"])
        assert await get_tags(client) == ["common", "medium", "rare"]

    async def test_only_tags_in_use(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["kept", "dropped"])
        await client.put(
            f"/articles/{created['slug']}",
            json={"article": {"tagList": ["kept"]}},
            headers=author.headers,
        )
        assert await get_tags(client) == ["kept"]

    async def test_tags_of_deleted_article_disappear(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        doomed = await create_article(client, author, tagList=["doomed", "shared"])
        await create_article(client, author, tagList=["shared"])
        assert await get_tags(client) == ["shared", "doomed"]
        await client.delete(f"/articles/{doomed['slug']}", headers=author.headers)
        assert await get_tags(client) == ["shared"]

    async def test_failed_create_adds_no_tags(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        response = await client.post(
            "/articles",
            json={"article": {"title": "", "description": "d", "body": "b", "tagList": ["x"]}},
            headers=author.headers,
        )
        assert response.status_code == 422
        assert await get_tags(client) == []


class TestTrailingSlash:
    async def test_list_and_create(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await client.post(
            "/articles/",
            json={"article": {"title": "Slashed", "description": "d", "body": "b"}},
            headers=author.headers,
        )
        assert created.status_code == 201
        listing = await client.get("/articles/")
        assert listing.status_code == 200
        assert listing.json()["articlesCount"] == 1

    async def test_single_article_feed_and_tags(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        created = await create_article(client, author, tagList=["slash"])
        article = await client.get(f"/articles/{created['slug']}/")
        assert article.status_code == 200
        assert article.json()["article"]["slug"] == created["slug"]
        feed = await client.get("/articles/feed/", headers=author.headers)
        assert feed.status_code == 200
        tags = await client.get("/tags/")
        assert tags.json() == {"tags": ["slash"]}

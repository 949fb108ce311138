import re
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.comments.models import Comment
from tests.helpers import Account, create_article, errors, register

pytestmark = pytest.mark.anyio

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def add_comment(
    client: httpx.AsyncClient, author: Account, slug: str, body: str = "Nice article"
) -> dict[str, Any]:
    response = await client.post(
        f"/articles/{slug}/comments", json={"comment": {"body": body}}, headers=author.headers
    )
    assert response.status_code == 200, response.text
    comment: dict[str, Any] = response.json()["comment"]
    return comment


async def list_comments(
    client: httpx.AsyncClient, slug: str, viewer: Account | None = None
) -> list[dict[str, Any]]:
    headers = viewer.headers if viewer else {}
    response = await client.get(f"/articles/{slug}/comments", headers=headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"comments"}
    comments: list[dict[str, Any]] = body["comments"]
    return comments


async def follow(client: httpx.AsyncClient, fan: Account, celeb: Account) -> None:
    response = await client.post(f"/profiles/{celeb.username}/follow", headers=fan.headers)
    assert response.status_code == 200, response.text


@pytest.fixture
async def author(client: httpx.AsyncClient) -> Account:
    return await register(client)


@pytest.fixture
async def slug(client: httpx.AsyncClient, author: Account) -> str:
    article = await create_article(client, author)
    result: str = article["slug"]
    return result


class TestAdd:
    async def test_returns_comment_with_all_fields(
        self, client: httpx.AsyncClient, slug: str
    ) -> None:
        commenter = await register(client)
        response = await client.post(
            f"/articles/{slug}/comments",
            json={"comment": {"body": "Thank you so much!"}},
            headers=commenter.headers,
        )
        assert response.status_code == 200
        comment = response.json()["comment"]
        assert set(comment) == {"id", "createdAt", "updatedAt", "body", "author"}
        assert isinstance(comment["id"], int)
        assert comment["body"] == "Thank you so much!"
        assert TIMESTAMP.match(comment["createdAt"]), comment["createdAt"]
        assert TIMESTAMP.match(comment["updatedAt"]), comment["updatedAt"]
        assert comment["author"] == {
            "username": commenter.username,
            "bio": "",
            "image": "",
            "following": False,
        }

    async def test_comment_is_listed_as_returned(
        self, client: httpx.AsyncClient, slug: str
    ) -> None:
        commenter = await register(client)
        comment = await add_comment(client, commenter, slug)
        assert await list_comments(client, slug) == [comment]

    async def test_author_profile_shows_bio_and_image(
        self, client: httpx.AsyncClient, slug: str
    ) -> None:
        commenter = await register(client)
        await client.put(
            "/user",
            json={"user": {"bio": "Commenter bio", "image": "https://i.example.com/c.png"}},
            headers=commenter.headers,
        )
        comment = await add_comment(client, commenter, slug)
        assert comment["author"]["bio"] == "Commenter bio"
        assert comment["author"]["image"] == "https://i.example.com/c.png"

    async def test_body_is_trimmed(self, client: httpx.AsyncClient, slug: str) -> None:
        commenter = await register(client)
        comment = await add_comment(client, commenter, slug, body="  spaced out \n")
        assert comment["body"] == "spaced out"

    async def test_ids_are_distinct(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        first = await add_comment(client, author, slug)
        second = await add_comment(client, author, slug)
        assert first["id"] != second["id"]

    async def test_requires_auth(self, client: httpx.AsyncClient, slug: str) -> None:
        response = await client.post(
            f"/articles/{slug}/comments", json={"comment": {"body": "Anonymous"}}
        )
        assert response.status_code == 401
        assert errors(response)
        assert await list_comments(client, slug) == []

    async def test_unknown_article_is_404(self, client: httpx.AsyncClient) -> None:
        commenter = await register(client)
        response = await client.post(
            "/articles/no-such-article/comments",
            json={"comment": {"body": "Hello"}},
            headers=commenter.headers,
        )
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}


class TestValidation:
    @pytest.mark.parametrize(
        ("comment", "message"),
        [
            ({}, "can't be blank"),
            ({"body": ""}, "can't be blank"),
            ({"body": "   \n\t"}, "can't be blank"),
            ({"body": None}, "must be a string"),
            ({"body": 42}, "must be a string"),
            ({"body": "x" * 10_001}, "is too long (maximum is 10000 characters)"),
            ({"body": "a\u0000b"}, "must not contain NUL characters"),
        ],
    )
    async def test_invalid_body_is_422(
        self,
        client: httpx.AsyncClient,
        author: Account,
        slug: str,
        comment: dict[str, Any],
        message: str,
    ) -> None:
        response = await client.post(
            f"/articles/{slug}/comments", json={"comment": comment}, headers=author.headers
        )
        assert response.status_code == 422
        assert errors(response) == {"body": [message]}
        assert await list_comments(client, slug) == []

    @pytest.mark.parametrize(
        "payload", [{}, {"body": "Envelope missing"}, {"comment": None}, {"comment": "x"}, []]
    )
    async def test_missing_comment_envelope_is_422(
        self, client: httpx.AsyncClient, author: Account, slug: str, payload: object
    ) -> None:
        response = await client.post(
            f"/articles/{slug}/comments", json=payload, headers=author.headers
        )
        assert response.status_code == 422
        assert errors(response)
        assert await list_comments(client, slug) == []

    async def test_malformed_json_is_422(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        response = await client.post(
            f"/articles/{slug}/comments",
            content=b'{"comment": ',
            headers={**author.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert "body" in errors(response)


class TestList:
    async def test_empty(self, client: httpx.AsyncClient, slug: str) -> None:
        assert await list_comments(client, slug) == []

    async def test_newest_first(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        bodies = ["first", "second", "third"]
        added = [await add_comment(client, author, slug, body=body) for body in bodies]
        listed = await list_comments(client, slug)
        assert [comment["id"] for comment in listed] == [comment["id"] for comment in added[::-1]]
        assert [comment["body"] for comment in listed] == ["third", "second", "first"]

    async def test_orders_by_creation_time(
        self, client: httpx.AsyncClient, session: AsyncSession, author: Account, slug: str
    ) -> None:
        first = await add_comment(client, author, slug, body="written first, backdated least")
        second = await add_comment(client, author, slug, body="written second, backdated most")
        await session.execute(
            update(Comment)
            .where(Comment.id == second["id"])
            .values(created_at=Comment.created_at - timedelta(hours=1))
        )
        await session.commit()
        listed = await list_comments(client, slug)
        assert [comment["id"] for comment in listed] == [first["id"], second["id"]]

    async def test_only_comments_of_that_article(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        other_slug = (await create_article(client, author))["slug"]
        mine = await add_comment(client, author, slug, body="here")
        await add_comment(client, author, other_slug, body="elsewhere")
        assert await list_comments(client, slug) == [mine]

    async def test_anonymous_read(self, client: httpx.AsyncClient, slug: str) -> None:
        commenter = await register(client)
        comment = await add_comment(client, commenter, slug)
        response = await client.get(f"/articles/{slug}/comments")
        assert response.status_code == 200
        assert response.json() == {"comments": [comment]}

    async def test_following_flag_is_for_the_caller(
        self, client: httpx.AsyncClient, slug: str
    ) -> None:
        followed = await register(client)
        stranger = await register(client)
        reader = await register(client)
        await add_comment(client, followed, slug, body="by followed")
        await add_comment(client, stranger, slug, body="by stranger")
        await add_comment(client, reader, slug, body="by reader")
        await add_comment(client, followed, slug, body="by followed again")
        await follow(client, reader, followed)
        as_reader = await list_comments(client, slug, reader)
        assert {(c["body"], c["author"]["following"]) for c in as_reader} == {
            ("by followed", True),
            ("by stranger", False),
            ("by reader", False),
            ("by followed again", True),
        }
        anonymous = await list_comments(client, slug)
        assert not any(comment["author"]["following"] for comment in anonymous)
        as_stranger = await list_comments(client, slug, stranger)
        assert not any(comment["author"]["following"] for comment in as_stranger)

    async def test_unknown_article_is_404(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/articles/no-such-article/comments")
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}

    async def test_trailing_slash(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        comment = await add_comment(client, author, slug)
        response = await client.get(f"/articles/{slug}/comments/")
        assert response.status_code == 200
        assert response.json() == {"comments": [comment]}


class TestDelete:
    async def test_comment_author_deletes_with_204(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        commenter = await register(client)
        doomed = await add_comment(client, commenter, slug, body="doomed")
        kept = await add_comment(client, commenter, slug, body="kept")
        response = await client.delete(
            f"/articles/{slug}/comments/{doomed['id']}", headers=commenter.headers
        )
        assert response.status_code == 204
        assert response.content == b""
        assert await list_comments(client, slug) == [kept]

    async def test_deleting_twice_is_404(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        comment = await add_comment(client, author, slug)
        path = f"/articles/{slug}/comments/{comment['id']}"
        await client.delete(path, headers=author.headers)
        again = await client.delete(path, headers=author.headers)
        assert again.status_code == 404
        assert errors(again) == {"comment": ["not found"]}

    async def test_other_user_is_403(self, client: httpx.AsyncClient, slug: str) -> None:
        commenter = await register(client)
        intruder = await register(client)
        comment = await add_comment(client, commenter, slug)
        response = await client.delete(
            f"/articles/{slug}/comments/{comment['id']}", headers=intruder.headers
        )
        assert response.status_code == 403
        assert errors(response) == {"comment": ["can only be deleted by its author or a moderator"]}
        assert await list_comments(client, slug) == [comment]

    async def test_article_author_cannot_delete_others_comments(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        commenter = await register(client)
        comment = await add_comment(client, commenter, slug)
        response = await client.delete(
            f"/articles/{slug}/comments/{comment['id']}", headers=author.headers
        )
        assert response.status_code == 403
        assert await list_comments(client, slug) == [comment]

    async def test_anonymous_is_401(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        comment = await add_comment(client, author, slug)
        response = await client.delete(f"/articles/{slug}/comments/{comment['id']}")
        assert response.status_code == 401
        assert errors(response)
        assert await list_comments(client, slug) == [comment]

    async def test_wrong_article_slug_is_404(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        other_slug = (await create_article(client, author))["slug"]
        comment = await add_comment(client, author, slug)
        response = await client.delete(
            f"/articles/{other_slug}/comments/{comment['id']}", headers=author.headers
        )
        assert response.status_code == 404
        assert errors(response) == {"comment": ["not found"]}
        assert await list_comments(client, slug) == [comment]

    async def test_unknown_article_is_404(
        self, client: httpx.AsyncClient, author: Account, slug: str
    ) -> None:
        comment = await add_comment(client, author, slug)
        response = await client.delete(
            f"/articles/no-such-article/comments/{comment['id']}", headers=author.headers
        )
        assert response.status_code == 404
        assert errors(response) == {"article": ["not found"]}

    @pytest.mark.parametrize("comment_id", ["999999999", "9223372036854775807"])
    async def test_unknown_id_is_404(
        self, client: httpx.AsyncClient, author: Account, slug: str, comment_id: str
    ) -> None:
        response = await client.delete(
            f"/articles/{slug}/comments/{comment_id}", headers=author.headers
        )
        assert response.status_code == 404
        assert errors(response) == {"comment": ["not found"]}

    @pytest.mark.parametrize(
        ("comment_id", "message"),
        [
            ("abc", "must be an integer"),
            ("1.5", "must be an integer"),
            ("0", "must be greater than or equal to 1"),
            ("-3", "must be greater than or equal to 1"),
            ("9223372036854775808", "must be less than or equal to 9223372036854775807"),
        ],
    )
    async def test_invalid_id_is_422(
        self,
        client: httpx.AsyncClient,
        author: Account,
        slug: str,
        comment_id: str,
        message: str,
    ) -> None:
        response = await client.delete(
            f"/articles/{slug}/comments/{comment_id}", headers=author.headers
        )
        assert response.status_code == 422
        assert errors(response) == {"id": [message]}

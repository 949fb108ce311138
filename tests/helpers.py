"""Small helpers that drive the API the way a client would."""

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

PASSWORD = "correct horse battery"
_counter = itertools.count(1)


@dataclass
class Account:
    username: str
    email: str
    password: str
    token: str
    refresh_token: str = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Token {self.token}"}


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_counter)}"


async def register(
    client: httpx.AsyncClient, username: str | None = None, *, password: str = PASSWORD
) -> Account:
    username = username or unique_name()
    email = f"{username}@example.com"
    response = await client.post(
        "/users", json={"user": {"username": username, "email": email, "password": password}}
    )
    assert response.status_code == 201, response.text
    user = response.json()["user"]
    return Account(username, email, password, user["token"], user["refreshToken"])


async def create_article(
    client: httpx.AsyncClient, author: Account, **fields: Any
) -> dict[str, Any]:
    article = {
        "title": fields.pop("title", unique_name("Article ")),
        "description": fields.pop("description", "A description"),
        "body": fields.pop("body", "The body"),
        **fields,
    }
    response = await client.post("/articles", json={"article": article}, headers=author.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()["article"]
    return result


def errors(response: httpx.Response) -> dict[str, list[str]]:
    body = response.json()
    assert set(body) == {"errors"}, body
    result: dict[str, list[str]] = body["errors"]
    return result


def auth(account: Account | None) -> dict[str, str]:
    return account.headers if account else {}


async def get_article(
    client: httpx.AsyncClient, slug: str, viewer: Account | None = None
) -> dict[str, Any]:
    response = await client.get(f"/articles/{slug}", headers=auth(viewer))
    assert response.status_code == 200, response.text
    article: dict[str, Any] = response.json()["article"]
    return article


async def list_articles(
    client: httpx.AsyncClient, viewer: Account | None = None, **params: Any
) -> dict[str, Any]:
    response = await client.get("/articles", params=params, headers=auth(viewer))
    assert response.status_code == 200, response.text
    listing: dict[str, Any] = response.json()
    return listing


def slugs_of(listing: dict[str, Any]) -> list[str]:
    return [article["slug"] for article in listing["articles"]]


async def get_tags(client: httpx.AsyncClient) -> list[str]:
    response = await client.get("/tags")
    assert response.status_code == 200, response.text
    tags: list[str] = response.json()["tags"]
    return tags


async def follow(client: httpx.AsyncClient, fan: Account, author: Account) -> None:
    response = await client.post(f"/profiles/{author.username}/follow", headers=fan.headers)
    assert response.status_code == 200, response.text


async def unfollow(client: httpx.AsyncClient, fan: Account, author: Account) -> None:
    response = await client.delete(f"/profiles/{author.username}/follow", headers=fan.headers)
    assert response.status_code == 200, response.text


async def favorite(client: httpx.AsyncClient, fan: Account, slug: str) -> None:
    response = await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    assert response.status_code == 200, response.text


async def unfavorite(client: httpx.AsyncClient, fan: Account, slug: str) -> None:
    response = await client.delete(f"/articles/{slug}/favorite", headers=fan.headers)
    assert response.status_code == 200, response.text


async def delete_article(client: httpx.AsyncClient, author: Account, slug: str) -> None:
    response = await client.delete(f"/articles/{slug}", headers=author.headers)
    assert response.status_code == 204, response.text


async def eventually(condition: Callable[[], Awaitable[bool]], *, within: float) -> None:
    """Wait until `condition()` holds, polling, for at most `within` seconds (else time out)."""
    async with asyncio.timeout(within):
        while not await condition():  # noqa: ASYNC110 (nothing signals these conditions)
            await asyncio.sleep(0.01)

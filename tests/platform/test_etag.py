"""ETag and If-None-Match on API reads."""

import httpx
import pytest

from conduit.platform.etag import entity_tag, matches
from tests.helpers import create_article, register

pytestmark = pytest.mark.anyio


async def test_single_resources_and_lists_carry_an_etag(client: httpx.AsyncClient) -> None:
    author = await register(client)
    slug = (await create_article(client, author))["slug"]
    paths = [
        f"/articles/{slug}",
        "/articles",
        f"/articles/{slug}/comments",
        f"/profiles/{author.username}",
        "/tags",
    ]
    for path in paths:
        response = await client.get(path)
        assert response.status_code == 200
        assert response.headers["etag"] == entity_tag(response.content), path
        assert response.headers["cache-control"] == "no-cache"
        assert "Authorization" in response.headers["vary"]
    assert (await client.get("/articles/feed", headers=author.headers)).headers["etag"]


async def test_a_matching_if_none_match_is_304_without_a_body(client: httpx.AsyncClient) -> None:
    author = await register(client)
    slug = (await create_article(client, author))["slug"]
    tag = (await client.get(f"/articles/{slug}")).headers["etag"]
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        response = await client.get(f"/articles/{slug}", headers={"If-None-Match": header})
        assert response.status_code == 304, header
        assert response.content == b""
        assert response.headers["etag"] == tag
        assert "content-type" not in response.headers
        assert "x-ratelimit-limit" in response.headers


async def test_a_change_gives_a_new_etag(client: httpx.AsyncClient) -> None:
    author = await register(client)
    slug = (await create_article(client, author))["slug"]
    old = (await client.get(f"/articles/{slug}")).headers["etag"]
    response = await client.put(
        f"/articles/{slug}", json={"article": {"body": "Edited"}}, headers=author.headers
    )
    assert response.status_code == 200
    fresh = await client.get(f"/articles/{slug}", headers={"If-None-Match": old})
    assert fresh.status_code == 200
    assert fresh.json()["article"]["body"] == "Edited"
    assert fresh.headers["etag"] != old


async def test_each_caller_gets_their_own_etag(client: httpx.AsyncClient) -> None:
    author, fan = await register(client), await register(client)
    slug = (await create_article(client, author))["slug"]
    await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    anonymous = await client.get(f"/articles/{slug}")
    as_fan = await client.get(f"/articles/{slug}", headers=fan.headers)
    assert anonymous.headers["etag"] != as_fan.headers["etag"]
    response = await client.get(
        f"/articles/{slug}", headers={**fan.headers, "If-None-Match": anonymous.headers["etag"]}
    )
    assert response.status_code == 200
    assert response.json()["article"]["favorited"] is True


async def test_errors_and_writes_carry_no_etag(client: httpx.AsyncClient) -> None:
    author = await register(client)
    assert "etag" not in (await client.get("/articles/missing")).headers
    response = await client.post(
        "/articles",
        json={"article": {"title": "t", "description": "d", "body": "b"}},
        headers=author.headers,
    )
    assert "etag" not in response.headers


def test_if_none_match_compares_weakly() -> None:
    assert matches('W/"abc"', '"abc"')
    assert matches('"x", "abc"', '"abc"')
    assert matches("*", '"abc"')
    assert not matches('"abcd"', '"abc"')

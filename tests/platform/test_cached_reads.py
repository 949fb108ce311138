"""Anonymous reads answered from the cache before routing: the routes' own answers, byte for
byte, only for requests the routes would accept, and the caller's rate limit taken once."""

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import Receive, Scope, Send

from conduit.platform.db.session import get_session
from conduit.platform.middleware import SecurityHeaders
from conduit.platform.settings import Settings
from tests.helpers import create_article, eventually, register
from tests.platform.backends import BACKENDS, on_backend

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_backend(settings, request.param, request)


def refuse_routing(app: FastAPI) -> None:
    """From now on, any request that reaches a route needing the database fails."""

    async def no_session() -> AsyncIterator[AsyncSession]:
        raise AssertionError("routed to the database")
        yield  # pragma: no cover

    app.dependency_overrides[get_session] = no_session


async def test_cached_reads_answer_as_their_routes_did_without_routing(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    author = await register(client)
    slug = (await create_article(client, author, title="Cached words", tagList=["cached"]))["slug"]
    paths = [
        "/articles",
        "/articles?limit=5&offset=0",
        f"/articles?tag=cached&author={author.username}",
        "/articles?q=cached%20words&tag=cached",
        f"/articles/{slug}",
        f"/profiles/{author.username}",
        "/tags",
    ]
    routed = {path: await client.get(path) for path in paths}
    assert {path: response.status_code for path, response in routed.items()} == dict.fromkeys(
        paths, 200
    )
    refuse_routing(app)
    for path in paths:
        cached = await client.get(path)
        assert cached.status_code == 200, (path, cached.text)
        assert cached.content == routed[path].content, path
        assert cached.headers["etag"] == routed[path].headers["etag"]
        assert cached.headers["x-request-id"] != routed[path].headers["x-request-id"]
        assert cached.headers["x-content-type-options"] == "nosniff"
        again = await client.get(path, headers={"If-None-Match": cached.headers["etag"]})
        assert again.status_code == 304


async def test_requests_the_routes_would_refuse_still_reach_them(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    author = await register(client)
    slug = (await create_article(client, author))["slug"]
    for path in ("/articles", f"/articles/{slug}", f"/profiles/{author.username}"):
        assert (await client.get(path)).status_code == 200
    refused = {
        "/articles?limit=0": 422,
        "/articles?limit=abc": 422,
        "/articles?limit=-1": 422,
        f"/articles?limit={settings.max_page_size + 1}": 422,
        "/articles?offset=-1": 422,
        "/articles?offset=1.5": 422,
        f"/articles?tag={'x' * 256}": 422,
        "/articles?tag=a%00b": 422,
        "/articles?cursor=nonsense": 422,
        "/articles?q=%20": 422,
        f"/articles?q={'x' * 256}": 422,
        "/articles?q=a%00b": 422,
        f"/articles/{slug}x": 404,
        "/profiles/nobody-by-this-name": 404,
    }
    answers = {path: (await client.get(path)).status_code for path in refused}
    assert answers == refused


async def test_a_read_with_a_body_is_refused_as_the_routes_refuse_it(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert (await client.get("/tags")).status_code == 200
    assert (await client.get("/tags")).status_code == 200
    text = await client.request(
        "GET", "/tags", content=b"tags", headers={"Content-Type": "text/plain"}
    )
    assert text.status_code == 415
    huge = b"[" + b" " * settings.max_body_bytes + b"]"
    too_large = await client.request(
        "GET", "/tags", content=huge, headers={"Content-Type": "application/json"}
    )
    assert too_large.status_code == 413


async def test_a_token_is_never_answered_as_anonymous(client: httpx.AsyncClient) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author))["slug"]
    assert (await client.get(f"/articles/{slug}")).status_code == 200
    favorite = await client.post(f"/articles/{slug}/favorite", headers=reader.headers)
    assert favorite.status_code == 200
    assert (await client.get(f"/articles/{slug}")).json()["article"]["favorited"] is False
    mine = await client.get(f"/articles/{slug}", headers=reader.headers)
    assert mine.json()["article"]["favorited"] is True
    forged = await client.get(f"/articles/{slug}", headers={"Authorization": "Token forged"})
    assert forged.status_code == 401
    # Anonymous: the feed is a route of its own, never an article named "feed".
    assert (await client.get("/articles/feed")).status_code == 401


class TestRateLimits:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"rate_limit_anonymous": "4/minute"})

    async def test_a_cached_read_counts_once_whether_or_not_it_was_routed(
        self, client: httpx.AsyncClient
    ) -> None:
        # The first read misses and is routed; the others are answered from the cache.
        responses = [await client.get("/tags") for _ in range(5)]
        assert [response.status_code for response in responses] == [200, 200, 200, 200, 429]
        remaining = [int(response.headers["x-ratelimit-remaining"]) for response in responses]
        assert remaining == [3, 2, 1, 0, 0]
        assert "retry-after" in responses[-1].headers
        assert responses[-1].json()["errors"]


async def local_copies_served(app: FastAPI) -> None:
    """Wait until the app serves local copies (with Redis, once it hears announcements)."""
    copies = app.state.cache.changes.copies

    async def trusted() -> bool:
        return bool(copies.trusted)

    await eventually(trusted, within=5)


class TestReplayedAnswers:
    """Without limits to take, a local copy's answer is sent again with the headers every
    middleware gave it the first time, instead of passing through them once more."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"rate_limit_enabled": False})

    @pytest.fixture
    def enveloped(self, monkeypatch: pytest.MonkeyPatch) -> list[str]:
        """The paths of the requests that went through the middleware (one of it is watched)."""
        paths: list[str] = []
        through = SecurityHeaders.__call__

        async def watched(
            middleware: SecurityHeaders, scope: Scope, receive: Receive, send: Send
        ) -> None:
            paths.append(scope["path"])
            await through(middleware, scope, receive, send)

        monkeypatch.setattr(SecurityHeaders, "__call__", watched)
        return paths

    async def test_a_replayed_answer_is_the_one_the_middleware_sent(
        self, client: httpx.AsyncClient, app: FastAPI, enveloped: list[str]
    ) -> None:
        await local_copies_served(app)
        author = await register(client)
        path = f"/profiles/{author.username}"
        # Routed (filling the cache), kept as a local copy, recorded; then replayed.
        answers = [await client.get(path) for _ in range(6)]
        assert enveloped.count(f"/api{path}") == 3
        recorded = answers[2]
        for answer in answers[3:]:
            assert answer.status_code == 200
            assert answer.content == recorded.content
            headers = [(name, value) for name, value in answer.headers.multi_items()]
            expected = [
                (name, answer.headers["x-request-id"] if name == "x-request-id" else value)
                for name, value in recorded.headers.multi_items()
            ]
            assert headers == expected
        request_ids = {answer.headers["x-request-id"] for answer in answers}
        assert len(request_ids) == 6
        assert all(re.fullmatch(r"[0-9a-f]{32}", request_id) for request_id in request_ids)

    async def test_requests_the_middleware_answers_differently_pass_through_it(
        self, client: httpx.AsyncClient, app: FastAPI, enveloped: list[str]
    ) -> None:
        await local_copies_served(app)
        for _ in range(3):
            await client.get("/tags")
        recorded = len(enveloped)
        etag = (await client.get("/tags")).headers["etag"]
        assert len(enveloped) == recorded

        own_id = await client.get("/tags", headers={"X-Request-ID": "caller-chosen-id"})
        assert own_id.headers["x-request-id"] == "caller-chosen-id"
        conditional = await client.get("/tags", headers={"If-None-Match": etag})
        assert conditional.status_code == 304
        cross_origin = await client.get("/tags", headers={"Origin": "https://elsewhere.test"})
        assert cross_origin.status_code == 200
        assert len(enveloped) == recorded + 3

    async def test_a_write_is_read_at_once_after_replays(
        self, client: httpx.AsyncClient, app: FastAPI, enveloped: list[str]
    ) -> None:
        await local_copies_served(app)
        author = await register(client)
        path = f"/profiles/{author.username}"
        for _ in range(4):
            assert (await client.get(path)).json()["profile"]["bio"] == ""
        assert enveloped.count(f"/api{path}") == 3
        updated = await client.put(
            "/user", json={"user": {"bio": "replayed no more"}}, headers=author.headers
        )
        assert updated.status_code == 200
        assert (await client.get(path)).json()["profile"]["bio"] == "replayed no more"

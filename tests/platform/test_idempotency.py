"""`Idempotency-Key` on the creating POSTs, on the in-process backend and on a real Redis."""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conduit.platform.idempotency import IdempotencyKeyInUse, IdempotencyStore
from conduit.platform.settings import Settings
from tests.helpers import Account, create_article, errors, register
from tests.platform.backends import BACKENDS, UNREACHABLE_REDIS_URL, on_backend, on_redis

pytestmark = pytest.mark.anyio

ARTICLE = {"article": {"title": "Once only", "description": "d", "body": "b"}}


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_backend(settings, request.param, request)


def with_key(account: Account, key: str) -> dict[str, str]:
    return {**account.headers, "Idempotency-Key": key}


async def articles_by(client: httpx.AsyncClient, account: Account) -> int:
    response = await client.get("/articles", params={"author": account.username})
    count: int = response.json()["articlesCount"]
    return count


async def post_article(
    client: httpx.AsyncClient, account: Account, key: str, body: dict[str, Any] = ARTICLE
) -> httpx.Response:
    return await client.post("/articles", json=body, headers=with_key(account, key))


class TestArticles:
    async def test_a_retry_returns_the_first_response_and_creates_nothing(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        key = str(uuid.uuid4())
        first = await post_article(client, account, key)
        retry = await post_article(client, account, key)
        assert first.status_code == retry.status_code == 201
        assert retry.json() == first.json()
        assert retry.headers["idempotent-replayed"] == "true"
        assert "idempotent-replayed" not in first.headers
        assert await articles_by(client, account) == 1

    async def test_the_same_body_in_another_key_order_is_the_same_request(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        first = await client.post(
            "/articles",
            content=b'{"article": {"title": "Once only", "description": "d", "body": "b"}}',
            headers={**with_key(account, "k1"), "Content-Type": "application/json"},
        )
        retry = await client.post(
            "/articles",
            content=b'{"article":{"body":"b","description":"d","title":"Once only"}}',
            headers={**with_key(account, "k1"), "Content-Type": "application/json"},
        )
        assert (first.status_code, retry.status_code) == (201, 201)
        assert retry.json() == first.json()

    async def test_the_same_key_with_another_body_is_422(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        assert (await post_article(client, account, "key")).status_code == 201
        other = {"article": {**ARTICLE["article"], "title": "Something else"}}
        response = await post_article(client, account, "key", other)
        assert response.status_code == 422
        assert set(errors(response)) == {"Idempotency-Key"}
        assert await articles_by(client, account) == 1

    async def test_keys_belong_to_each_user(self, client: httpx.AsyncClient) -> None:
        first, second = await register(client), await register(client)
        assert (await post_article(client, first, "shared")).status_code == 201
        response = await post_article(client, second, "shared")
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
        assert response.json()["article"]["author"]["username"] == second.username

    async def test_without_a_key_every_post_creates(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        for _ in range(2):
            await client.post("/articles", json=ARTICLE, headers=account.headers)
        assert await articles_by(client, account) == 2

    async def test_a_failed_attempt_frees_its_key(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        blank = {"article": {"title": "", "description": "d", "body": "b"}}
        assert (await post_article(client, account, "fix-and-retry", blank)).status_code == 422
        assert (await post_article(client, account, "fix-and-retry")).status_code == 201

    async def test_a_duplicate_while_the_first_runs_is_409(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        account = await register(client)
        assert (await post_article(client, account, "warm-up")).status_code == 201
        store: IdempotencyStore = app.state.idempotency
        fingerprint = await _fingerprint_of_first_attempt(client, app, account)
        await store.begin(_record_key(app, account, "in-flight"), fingerprint)

        response = await post_article(client, account, "in-flight")
        assert response.status_code == 409
        assert set(errors(response)) == {"Idempotency-Key"}
        assert await articles_by(client, account) == 1

    async def test_keys_expire(self, client: httpx.AsyncClient, app: FastAPI) -> None:
        account = await register(client)
        app.state.idempotency.ttl_seconds = 1
        assert (await post_article(client, account, "short-lived")).status_code == 201
        await asyncio.sleep(1.2)
        response = await post_article(client, account, "short-lived")
        assert response.status_code == 201
        assert "idempotent-replayed" not in response.headers
        assert await articles_by(client, account) == 2

    @pytest.mark.parametrize("key", ["", "x" * 256, "spaces are not allowed"])
    async def test_a_malformed_key_is_422(self, client: httpx.AsyncClient, key: str) -> None:
        account = await register(client)
        response = await post_article(client, account, key)
        assert response.status_code == 422
        assert set(errors(response)) == {"Idempotency-Key"}


class TestComments:
    async def test_a_retried_comment_is_posted_once(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        slug = (await create_article(client, account))["slug"]
        comment = {"comment": {"body": "Only once"}}
        responses = [
            await client.post(
                f"/articles/{slug}/comments", json=comment, headers=with_key(account, "c1")
            )
            for _ in range(2)
        ]
        assert [response.status_code for response in responses] == [200, 200]
        assert responses[1].json() == responses[0].json()
        listed = (await client.get(f"/articles/{slug}/comments")).json()["comments"]
        assert len(listed) == 1

    async def test_the_same_key_on_another_article_is_422(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        first = (await create_article(client, account))["slug"]
        second = (await create_article(client, account))["slug"]
        comment = {"comment": {"body": "Hello"}}
        headers = with_key(account, "c2")
        assert (
            await client.post(f"/articles/{first}/comments", json=comment, headers=headers)
        ).status_code == 200
        response = await client.post(f"/articles/{second}/comments", json=comment, headers=headers)
        assert response.status_code == 422


class TestConcurrentClaims:
    async def test_only_one_of_two_simultaneous_attempts_proceeds(self, app: FastAPI) -> None:
        store: IdempotencyStore = app.state.idempotency
        outcomes = await asyncio.gather(
            *(store.begin("idempotency:race", "same-request") for _ in range(5)),
            return_exceptions=True,
        )
        assert outcomes.count(None) == 1
        assert all(
            isinstance(outcome, IdempotencyKeyInUse) for outcome in outcomes if outcome is not None
        )


class TestRedisUnreachable:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return on_redis(settings, UNREACHABLE_REDIS_URL)

    async def test_a_keyed_request_is_refused_rather_than_run_unguarded(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        response = await post_article(client, account, "no-store")
        assert response.status_code == 503
        assert set(errors(response)) == {"Idempotency-Key"}
        assert await articles_by(client, account) == 0
        unkeyed = await client.post("/articles", json=ARTICLE, headers=account.headers)
        assert unkeyed.status_code == 201


async def test_the_header_is_documented_on_the_creating_posts(app: FastAPI) -> None:
    paths = app.openapi()["paths"]
    for path in ("/api/articles", "/api/articles/{slug}/comments"):
        parameters = paths[path]["post"]["parameters"]
        header = next(p for p in parameters if p["name"] == "Idempotency-Key")
        assert header["in"] == "header"
        assert "retry" in header["description"]


def _record_key(app: FastAPI, account: Account, key: str) -> str:
    import hashlib

    from conduit.platform.security import read_access_token

    user_id = read_access_token(account.token, secret=app.state.jwt_secret).user_id
    return f"idempotency:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"


async def _fingerprint_of_first_attempt(
    client: httpx.AsyncClient, app: FastAPI, account: Account
) -> str:
    record = await app.state.cache.get(_record_key(app, account, "warm-up"))
    fingerprint: str = record["fingerprint"]
    return fingerprint

"""The notifications API: listing, pagination, counts, marking read, authorisation and
validation. Notifications are produced the real way: API calls, then the queued jobs."""

import re
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from conduit.platform.settings import Settings
from tests.helpers import Account, errors, follow, register
from tests.jobs import JobRunner
from tests.notifications.helpers import listing, mark_read, notifications
from tests.platform.backends import UNREACHABLE_REDIS_URL, on_redis

pytestmark = pytest.mark.anyio

NEITHER = "must give the ids to mark read, or all: true"
BOTH = "must give either ids or all, not both"
TOO_BIG = f"must be less than or equal to {2**63 - 1}"
TOO_MANY = "has too many items (maximum is 1000)"
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


async def followed_by(
    client: httpx.AsyncClient, jobs: JobRunner, celeb: Account, count: int
) -> list[Account]:
    """`count` new followers of `celeb`, whose follow notifications have been written."""
    fans = [await register(client) for _ in range(count)]
    for fan in fans:
        await follow(client, fan, celeb)
    await jobs.run_all()
    return fans


async def ids_of(client: httpx.AsyncClient, user: Account) -> list[int]:
    return [item["id"] for item in await notifications(client, user)]


class TestAuthorisation:
    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("GET", "/notifications"),
            ("POST", "/notifications/read"),
            ("GET", "/notifications/stream"),
        ],
    )
    async def test_every_route_needs_a_token(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        response = await client.request(method, path, json={"notifications": {"all": True}})
        assert response.status_code == 401
        assert errors(response) == {"token": ["is missing"]}

    async def test_a_forged_token_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get(
            "/notifications/stream", headers={"Authorization": "Token not.a.jwt"}
        )
        assert response.status_code == 401

    async def test_each_user_sees_only_their_own(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb, other = await register(client), await register(client)
        await followed_by(client, jobs, celeb, 2)
        assert len(await notifications(client, celeb)) == 2
        assert await listing(client, other) == {
            "notifications": [],
            "notificationsCount": 0,
            "unreadCount": 0,
        }


class TestList:
    async def test_an_item_has_the_documented_shape(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb = await register(client)
        [fan] = await followed_by(client, jobs, celeb, 1)
        [item] = await notifications(client, celeb)
        assert set(item) == {"id", "kind", "createdAt", "read", "actor", "article", "comment"}
        assert isinstance(item["id"], int)
        assert TIMESTAMP.match(item["createdAt"])
        assert item["kind"] == "follow"
        assert item["read"] is False
        assert item["actor"] == {
            "username": fan.username,
            "bio": "",
            "image": "",
            "following": False,
        }
        assert item["article"] is None
        assert item["comment"] is None

    async def test_the_actor_shows_whether_the_recipient_follows_them(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb = await register(client)
        [fan] = await followed_by(client, jobs, celeb, 1)
        await follow(client, celeb, fan)
        [item] = await notifications(client, celeb)
        assert item["actor"]["following"] is True

    async def test_pages_newest_first_with_counts_of_all(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb = await register(client)
        fans = await followed_by(client, jobs, celeb, 5)
        newest_first = [fan.username for fan in reversed(fans)]

        pages = []
        for offset in (0, 2, 4):
            body = await listing(client, celeb, limit=2, offset=offset)
            assert body["notificationsCount"] == 5
            assert body["unreadCount"] == 5
            pages.append([item["actor"]["username"] for item in body["notifications"]])
        assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:]]
        assert (await listing(client, celeb, offset=5))["notifications"] == []
        assert len((await listing(client, celeb))["notifications"]) == 5

    @pytest.mark.parametrize(
        ("params", "field", "message"),
        [
            ({"limit": 0}, "limit", "must be greater than or equal to 1"),
            ({"limit": 101}, "limit", "must be less than or equal to 100"),
            ({"limit": "many"}, "limit", "must be an integer"),
            ({"offset": -1}, "offset", "must be greater than or equal to 0"),
            ({"offset": 2**31}, "offset", "must be less than or equal to 2147483647"),
        ],
    )
    async def test_bad_paging_is_422(
        self, client: httpx.AsyncClient, params: dict[str, Any], field: str, message: str
    ) -> None:
        user = await register(client)
        response = await client.get("/notifications", params=params, headers=user.headers)
        assert response.status_code == 422
        assert errors(response) == {field: [message]}

    async def test_a_page_costs_the_same_queries_whatever_its_size(
        self, client: httpx.AsyncClient, jobs: JobRunner, engine: AsyncEngine
    ) -> None:
        celeb = await register(client)
        fans = await followed_by(client, jobs, celeb, 6)
        # Each item differs in every joined part: its actor follows back or not, and so on.
        await follow(client, celeb, fans[0])
        statements: list[str] = []

        def record(*args: Any) -> None:
            statements.append(args[2])

        async def count_for(limit: int) -> int:
            statements.clear()
            event.listen(engine.sync_engine, "before_cursor_execute", record)
            try:
                body = await listing(client, celeb, limit=limit)
            finally:
                event.remove(engine.sync_engine, "before_cursor_execute", record)
            assert len(body["notifications"]) == limit
            return len(statements)

        assert await count_for(1) == await count_for(6)


class TestMarkRead:
    async def test_marks_the_ids_given_and_answers_the_unread_count(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb = await register(client)
        await followed_by(client, jobs, celeb, 3)
        first, second, third = await ids_of(client, celeb)
        assert await mark_read(client, celeb, {"ids": [first, third]}) == 1
        items = await notifications(client, celeb)
        assert [item["read"] for item in items] == [True, False, True]
        assert (await listing(client, celeb))["unreadCount"] == 1
        # Marking again changes nothing and says the same.
        assert await mark_read(client, celeb, {"ids": [first, first]}) == 1
        assert second in await ids_of(client, celeb)

    async def test_marks_all(self, client: httpx.AsyncClient, jobs: JobRunner) -> None:
        celeb = await register(client)
        await followed_by(client, jobs, celeb, 3)
        assert await mark_read(client, celeb, {"all": True}) == 0
        body = await listing(client, celeb)
        assert body["unreadCount"] == 0
        assert body["notificationsCount"] == 3
        assert all(item["read"] for item in body["notifications"])
        assert await mark_read(client, celeb, {"all": True}) == 0

    async def test_ids_of_someone_elses_notifications_are_ignored(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb, other = await register(client), await register(client)
        await followed_by(client, jobs, celeb, 2)
        await followed_by(client, jobs, other, 1)
        theirs = await ids_of(client, celeb)
        [mine] = await ids_of(client, other)

        assert await mark_read(client, other, {"ids": [*theirs, 2**62]}) == 1
        assert (await listing(client, celeb))["unreadCount"] == 2
        assert await mark_read(client, other, {"ids": [mine, *theirs]}) == 0
        assert (await listing(client, celeb))["unreadCount"] == 2
        # Nor does "all" reach past the caller.
        await mark_read(client, other, {"all": True})
        assert (await listing(client, celeb))["unreadCount"] == 2

    @pytest.mark.parametrize(
        ("body", "expected"),
        [
            ({}, {"notifications": ["can't be blank"]}),
            ({"notifications": []}, {"notifications": ["must be an object"]}),
            ({"notifications": {}}, {"notifications": [NEITHER]}),
            ({"notifications": {"all": False}}, {"notifications": [NEITHER]}),
            ({"notifications": {"ids": [1], "all": True}}, {"notifications": [BOTH]}),
            ({"notifications": {"ids": []}}, {"ids": ["can't be blank"]}),
            ({"notifications": {"ids": 3}}, {"ids": ["must be a list"]}),
            ({"notifications": {"ids": ["3"]}}, {"ids": ["must be an integer"]}),
            ({"notifications": {"ids": [1.5]}}, {"ids": ["must be an integer"]}),
            ({"notifications": {"ids": [0]}}, {"ids": ["must be greater than or equal to 1"]}),
            ({"notifications": {"ids": [2**63]}}, {"ids": [TOO_BIG]}),
            ({"notifications": {"ids": list(range(1, 1002))}}, {"ids": [TOO_MANY]}),
            ({"notifications": {"all": "yes"}}, {"all": ["must be true or false"]}),
        ],
    )  # fmt: skip
    async def test_a_bad_body_is_422(
        self, client: httpx.AsyncClient, body: dict[str, Any], expected: dict[str, list[str]]
    ) -> None:
        user = await register(client)
        response = await client.post("/notifications/read", json=body, headers=user.headers)
        assert response.status_code == 422, response.text
        assert errors(response) == expected

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        user = await register(client)
        response = await client.post(
            "/notifications/read",
            content=b'{"notifications": ',
            headers={**user.headers, "Content-Type": "application/json"},
        )
        assert response.status_code == 422
        assert list(errors(response)) == ["body"]


class TestStreamRefusals:
    async def test_a_bad_last_event_id_is_422(self, client: httpx.AsyncClient) -> None:
        user = await register(client)
        response = await client.get(
            "/notifications/stream", headers={**user.headers, "Last-Event-ID": "yesterday"}
        )
        assert response.status_code == 422
        assert errors(response) == {"Last-Event-ID": ["must be an integer"]}


class TestStreamWithoutRedis:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return on_redis(settings, UNREACHABLE_REDIS_URL)

    async def test_the_stream_is_503_when_it_cannot_listen(self, client: httpx.AsyncClient) -> None:
        """Better refused, so that the client retries, than open and silent."""
        user = await register(client)
        response = await client.get("/notifications/stream", headers=user.headers)
        assert response.status_code == 503
        assert errors(response) == {"live": ["is unavailable; try again shortly"]}
        # The rest of the API does not depend on it.
        assert (await listing(client, user))["unreadCount"] == 0

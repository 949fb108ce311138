"""Local copies of cached reads: never served once a change to their generations is heard of,
and not at all while changes may go unheard."""

import contextlib
import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from redis.asyncio import Redis
from sqlalchemy import text

from conduit.app import create_app
from conduit.platform import local_copies
from conduit.platform.local_copies import LocalCopies
from conduit.platform.settings import Settings
from tests.helpers import PASSWORD, eventually
from tests.platform.backends import on_redis, own_redis_server

GENERATIONS = ("article:a", "articles")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(local_copies.time, "monotonic", clock)
    return clock


def kept(copies: LocalCopies, key: str = "k", body: bytes = b"{}") -> LocalCopies:
    copies.keep(key, GENERATIONS, copies.snapshot(GENERATIONS), body, tag='"t"')
    return copies


class TestLocalCopies:
    def test_a_copy_is_served_until_one_of_its_generations_changes(self) -> None:
        copies = kept(LocalCopies(trusted=True))
        copy = copies.get("k", GENERATIONS)
        assert copy is not None
        assert (copy.body, copy.tag) == (b"{}", '"t"')
        copies.changed(["articles:other"])
        assert copies.get("k", GENERATIONS) is not None
        copies.changed(["articles"])
        assert copies.get("k", GENERATIONS) is None

    def test_a_copy_is_not_kept_when_a_change_was_heard_while_its_entry_was_read(self) -> None:
        copies = LocalCopies(trusted=True)
        snapshot = copies.snapshot(GENERATIONS)
        copies.changed(["article:a"])
        copies.keep("k", GENERATIONS, snapshot, b"{}", tag='"t"')
        assert copies.get("k", GENERATIONS) is None
        # An entry read after the change is fresh.
        assert kept(copies).get("k", GENERATIONS) is not None

    def test_a_copy_is_only_served_for_the_generations_it_was_built_on(self) -> None:
        copies = kept(LocalCopies(trusted=True))
        assert copies.get("k", ("articles",)) is None
        assert kept(copies).get("k", (*GENERATIONS, "article:b")) is None

    def test_a_copy_built_on_more_generations_than_its_address_names_changes_with_all(
        self,
    ) -> None:
        # A list page's address names the generations of its keys; its articles' come with them.
        copies = kept(LocalCopies(trusted=True))
        address = GENERATIONS[:1]
        assert copies.get("k", address) is not None
        copies.changed([GENERATIONS[1]])
        assert copies.get("k", address) is None

    def test_a_snapshot_in_two_parts_matches_nothing_when_the_counts_started_over_between(
        self,
    ) -> None:
        copies = LocalCopies(trusted=True)
        first = copies.snapshot(GENERATIONS[:1])
        copies.forget_all()
        both = first.extended(copies.snapshot(GENERATIONS[1:]))
        copies.keep("k", GENERATIONS, both, b"{}", tag='"t"')
        assert copies.get("k", GENERATIONS) is None
        unbroken = copies.snapshot(GENERATIONS[:1]).extended(copies.snapshot(GENERATIONS[1:]))
        copies.keep("k", GENERATIONS, unbroken, b"{}", tag='"t"')
        assert copies.get("k", GENERATIONS) is not None

    def test_nothing_is_kept_or_served_while_untrusted(self) -> None:
        copies = kept(LocalCopies(trusted=False))
        assert copies.get("k", GENERATIONS) is None
        copies.trust()
        kept(copies)
        copies.distrust()
        assert copies.get("k", GENERATIONS) is None
        copies.trust()
        # Trusting again starts from nothing: what was kept before may have gone stale.
        assert copies.get("k", GENERATIONS) is None

    def test_a_copy_expires(self, clock: Clock) -> None:
        copies = kept(LocalCopies(trusted=True))
        clock.now += local_copies.MAX_AGE_SECONDS - 0.01
        assert copies.get("k", GENERATIONS) is not None
        clock.now += 0.02
        assert copies.get("k", GENERATIONS) is None

    def test_the_oldest_copies_go_first_past_the_size_bound(self) -> None:
        copies = LocalCopies(trusted=True, max_bytes=1000)
        for number in range(100):
            kept(copies, str(number), body=b"x" * 10)
        kept(copies, "0", body=b"x" * 10)  # refreshed: now the newest
        assert copies.get("1", GENERATIONS) is not None  # being read does not refresh it
        kept(copies, "new", body=b"x" * 10)
        left = [key for key in ("0", "1", "2", "new") if copies.get(key, GENERATIONS)]
        assert left == ["0", "2", "new"]

    def test_a_body_too_large_for_its_share_is_not_kept(self) -> None:
        copies = LocalCopies(trusted=True, max_bytes=1000)
        assert kept(copies, body=b"x" * 11).get("k", GENERATIONS) is None
        assert kept(copies, body=b"x" * 10).get("k", GENERATIONS) is not None

    def test_counting_starts_over_without_reviving_an_old_snapshot(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr(local_copies, "MAX_TRACKED_GENERATIONS", 2)
        copies = kept(LocalCopies(trusted=True))
        snapshot = copies.snapshot(GENERATIONS)
        copies.changed(["one", "two", "three"])
        assert copies.get("k", GENERATIONS) is None
        # The counts are all zero again, as they were at the snapshot: the epoch tells apart.
        copies.keep("k", GENERATIONS, snapshot, b"{}", tag='"t"')
        assert copies.get("k", GENERATIONS) is None


@pytest.fixture
def redis_settings(settings: Settings, redis_server_url: str) -> Settings:
    return on_redis(settings, redis_server_url)


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """A server process's app, its lifespan run, once it hears change announcements."""
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            await until_trusted(app, True)
            yield app, client


async def until_trusted(app: FastAPI, trusted: bool) -> None:
    async def reached() -> bool:
        return app.state.cache.changes.copies.trusted is trusted

    await eventually(reached, within=5)


async def delete_cache_entries(settings: Settings) -> None:
    """Every entry but none of the generations: only a local copy can answer from the cache."""
    assert settings.redis_url is not None
    async with Redis.from_url(settings.redis_url) as client:
        prefix = settings.redis_key_prefix
        keys = [
            key
            async for key in client.scan_iter(match=f"{prefix}*")
            if not key.startswith(f"{prefix}gen:".encode())
        ]
        assert keys
        await client.delete(*keys)


@pytest.mark.anyio
async def test_another_process_stops_serving_its_copy_once_a_write_is_announced(
    redis_settings: Settings,
) -> None:
    async with (
        served(redis_settings) as (app, writer),
        served(redis_settings) as (_, reader),
    ):
        name = f"copies_{uuid.uuid4().hex[:8]}"
        user = {"username": name, "email": f"{name}@example.com", "password": PASSWORD}
        registered = await writer.post("/users", json={"user": user})
        assert registered.status_code == 201, registered.text
        headers = {"Authorization": f"Token {registered.json()['user']['token']}"}
        try:
            article = {"title": name, "description": "d", "body": "Before"}
            created = await writer.post("/articles", json={"article": article}, headers=headers)
            slug = created.json()["article"]["slug"]

            async def body() -> str:
                response = await reader.get(f"/articles/{slug}")
                assert response.status_code == 200
                return str(response.json()["article"]["body"])

            # The first read is routed and fills Redis; the second keeps a copy of the entry.
            assert [await body(), await body()] == ["Before", "Before"]
            await delete_cache_entries(redis_settings)
            assert await body() == "Before"

            edited = await writer.put(
                f"/articles/{slug}", json={"article": {"body": "After"}}, headers=headers
            )
            assert edited.status_code == 200

            # Well within a copy's maximum age, which would end it without any announcement.
            async def edited_body() -> bool:
                return await body() == "After"

            await eventually(edited_body, within=local_copies.MAX_AGE_SECONDS / 2)
        finally:
            async with app.state.engine.begin() as connection:
                await connection.execute(
                    text("DELETE FROM user_account WHERE username = :name"), {"name": name}
                )


@pytest.mark.anyio
async def test_copies_are_dropped_while_announcements_cannot_be_heard(
    settings: Settings,
) -> None:
    with own_redis_server() as own_redis:
        async with served(on_redis(settings, own_redis.connection_url)) as (app, client):
            for _ in range(3):
                assert (await client.get("/tags")).status_code == 200
            own_redis.stop()
            await until_trusted(app, False)
            assert (await client.get("/tags")).status_code == 200
            own_redis.start()
            await until_trusted(app, True)
            assert (await client.get("/tags")).status_code == 200

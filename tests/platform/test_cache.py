"""Cached reads, on the in-process backend and on a real Redis: served from the cache while
current, never stale after a committed change, never another caller's flags, and never an
error because of the cache."""

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from conduit.articles import service as articles_service
from conduit.platform.cache import GENERATION_TTL_SECONDS, Cache, CacheAddress, Found
from conduit.platform.observability.metrics import CACHE_HITS, CACHE_MISSES, CACHE_STALE_ANSWERS
from conduit.platform.settings import Settings
from tests.articles.test_queries import queries, recorded_statements
from tests.helpers import (
    Account,
    auth,
    create_article,
    get_article,
    get_tags,
    list_articles,
    register,
    slugs_of,
)
from tests.platform.backends import BACKENDS, UNREACHABLE_REDIS_URL, on_backend, on_redis

pytestmark = pytest.mark.anyio


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_backend(settings, request.param, request)


async def get_profile(
    client: httpx.AsyncClient, username: str, viewer: Account | None = None
) -> dict[str, Any]:
    response = await client.get(f"/profiles/{username}", headers=auth(viewer))
    assert response.status_code == 200, response.text
    profile: dict[str, Any] = response.json()["profile"]
    return profile


async def _value(value: str) -> str:
    return value


def counted(counter: Any, name: str) -> float:
    value: float = counter.labels(name)._value.get()
    return value


class TestCachedReads:
    async def test_a_second_anonymous_read_of_an_article_costs_no_query(
        self, client: httpx.AsyncClient, app: FastAPI, engine: Any
    ) -> None:
        author = await register(client)
        slug = (await create_article(client, author, body="Cached body"))["slug"]
        hits = counted(CACHE_HITS, "article")
        first = await get_article(client, slug)
        with recorded_statements(engine) as statements:
            second = await get_article(client, slug)
        assert statements == []
        assert second == first
        assert second["body"] == "Cached body"
        assert counted(CACHE_HITS, "article") == hits + 1

    async def test_writes_to_other_articles_leave_an_article_cached(
        self, client: httpx.AsyncClient, engine: Any
    ) -> None:
        author, fan = await register(client), await register(client)
        slug = (await create_article(client, author))["slug"]
        other = (await create_article(client, author))["slug"]
        first = await get_article(client, slug)
        response = await client.post(f"/articles/{other}/favorite", headers=fan.headers)
        assert response.status_code == 200, response.text
        await create_article(client, author)
        with recorded_statements(engine) as statements:
            second = await get_article(client, slug)
        assert statements == []
        assert second == first

    async def test_cached_reads_answer_the_wire_format_of_their_schemas(
        self, client: httpx.AsyncClient
    ) -> None:
        author, viewer = await register(client), await register(client)
        await create_article(client, author, tagList=["wire"])
        for reader in (None, viewer):
            for _ in range(2):  # the miss that builds the entry, then the hit
                listing = await list_articles(client, reader, author=author.username)
                (summary,) = listing["articles"]
                assert set(listing) == {"articles", "articlesCount", "nextCursor"}
                assert {"tagList", "createdAt", "favoritesCount"} <= set(summary)
                assert "body" not in summary
                assert summary["createdAt"].endswith("Z")
                article = await get_article(client, summary["slug"], reader)
                assert set(article) == set(summary) | {"body"}
                assert set(await get_profile(client, author.username, reader)) == {
                    "username",
                    "bio",
                    "image",
                    "following",
                }

    async def test_lists_tags_and_profiles_are_served_from_the_cache(
        self, client: httpx.AsyncClient, engine: Any
    ) -> None:
        author = await register(client)
        await create_article(client, author, tagList=["cached"])
        paths = ["/articles", "/articles?tag=cached", "/tags", f"/profiles/{author.username}"]
        first = [(await client.get(path)).json() for path in paths]
        with recorded_statements(engine) as statements:
            second = [(await client.get(path)).json() for path in paths]
        assert statements == []
        assert second == first

    async def test_a_missing_article_is_not_cached(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        misses = counted(CACHE_MISSES, "article")
        assert (await client.get("/articles/how-to-cache")).status_code == 404
        assert (await client.get("/articles/how-to-cache")).status_code == 404
        assert counted(CACHE_MISSES, "article") == misses + 2
        created = await create_article(client, author, title="How to cache")
        assert created["slug"] == "how-to-cache"
        assert (await get_article(client, "how-to-cache"))["title"] == "How to cache"


class TestInvalidation:
    async def test_an_edit_is_seen_at_once(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slug = (await create_article(client, author, title="Before", tagList=["old"]))["slug"]
        await get_article(client, slug)
        await list_articles(client)
        await get_tags(client)

        changes = {"title": "After", "body": "New body", "tagList": ["new"]}
        response = await client.put(
            f"/articles/{slug}", json={"article": changes}, headers=author.headers
        )
        assert response.status_code == 200, response.text

        article = await get_article(client, slug)
        assert (article["title"], article["body"], article["tagList"]) == (
            "After",
            "New body",
            ["new"],
        )
        assert [item["title"] for item in (await list_articles(client))["articles"]] == ["After"]
        assert await get_tags(client) == ["new"]

    async def test_a_deleted_article_is_gone_at_once(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slug = (await create_article(client, author, tagList=["doomed"]))["slug"]
        await get_article(client, slug)
        assert (await list_articles(client))["articlesCount"] == 1
        assert await get_tags(client) == ["doomed"]

        response = await client.delete(f"/articles/{slug}", headers=author.headers)
        assert response.status_code == 204

        assert (await client.get(f"/articles/{slug}")).status_code == 404
        assert (await list_articles(client))["articlesCount"] == 0
        assert await get_tags(client) == []

    async def test_a_new_article_appears_in_lists_and_tags(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        await create_article(client, author, tagList=["first"])
        assert (await list_articles(client, author=author.username))["articlesCount"] == 1
        assert await get_tags(client) == ["first"]

        await create_article(client, author, tagList=["second"])

        assert (await list_articles(client, author=author.username))["articlesCount"] == 2
        assert sorted(await get_tags(client)) == ["first", "second"]

    async def test_a_favorite_updates_counts_flags_and_favorited_lists(
        self, client: httpx.AsyncClient
    ) -> None:
        author, fan, other = await register(client), await register(client), await register(client)
        slug = (await create_article(client, author))["slug"]
        for viewer in (None, fan, other):
            await get_article(client, slug, viewer)
            await list_articles(client, viewer)
        assert (await list_articles(client, favorited=fan.username))["articlesCount"] == 0

        response = await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
        assert response.status_code == 200, response.text

        for viewer, favorited in ((None, False), (fan, True), (other, False)):
            article = await get_article(client, slug, viewer)
            assert (article["favoritesCount"], article["favorited"]) == (1, favorited)
            (listed,) = (await list_articles(client, viewer))["articles"]
            assert (listed["favoritesCount"], listed["favorited"]) == (1, favorited)
        assert (await list_articles(client, favorited=fan.username))["articlesCount"] == 1

        response = await client.delete(f"/articles/{slug}/favorite", headers=fan.headers)
        assert response.status_code == 200, response.text
        article = await get_article(client, slug, fan)
        assert (article["favoritesCount"], article["favorited"]) == (0, False)
        assert (await list_articles(client, favorited=fan.username))["articlesCount"] == 0

    async def test_a_favorite_reloads_only_the_favorited_articles_summary(
        self, client: httpx.AsyncClient, engine: Any
    ) -> None:
        author, fan = await register(client), await register(client)
        slugs = [(await create_article(client, author))["slug"] for _ in range(3)]
        await list_articles(client)
        response = await client.post(f"/articles/{slugs[1]}/favorite", headers=fan.headers)
        assert response.status_code == 200, response.text

        with recorded_statements(engine) as statements:
            listing = await list_articles(client)

        counts = {article["slug"]: article["favoritesCount"] for article in listing["articles"]}
        assert counts == {slugs[0]: 0, slugs[1]: 1, slugs[2]: 0}
        # The summary of the one article and its tags; the list's keys and count stay cached.
        summary, tags = queries(statements)
        assert "article.slug IN" in summary
        assert "FROM article_tag JOIN tag" in tags

    async def test_front_pages_cut_from_shared_blocks_match_the_list_and_its_cursors(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        small_blocks(monkeypatch)
        author = await register(client)
        for _ in range(10):
            await create_article(client, author)
        await assert_front_pages_match_the_list(client, 10)

    async def test_front_pages_follow_publications_and_deletions(
        self, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        small_blocks(monkeypatch)
        author = await register(client)
        slugs = [(await create_article(client, author))["slug"] for _ in range(10)]
        await assert_front_pages_match_the_list(client, 10)
        # Within the blocks' slack, to its end, past it, and deletions before and within the
        # later blocks.
        for count in (11, 12, 13, 14):
            slugs.append((await create_article(client, author))["slug"])
            await assert_front_pages_match_the_list(client, count)
        for deleted, count in ((slugs[5], 13), (slugs[-1], 12), (slugs[0], 11)):
            response = await client.delete(f"/articles/{deleted}", headers=author.headers)
            assert response.status_code == 204, response.text
            await assert_front_pages_match_the_list(client, count)

    async def test_a_publication_reads_only_the_first_block_again(
        self, client: httpx.AsyncClient, engine: Any, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        small_blocks(monkeypatch)
        author = await register(client)
        for _ in range(10):
            await create_article(client, author)
        # Every article's summary, and the first two blocks.
        await list_articles(client, limit=10)
        await list_articles(client, limit=2, offset=4)
        await create_article(client, author)

        with recorded_statements(engine) as statements:
            listing = await list_articles(client, limit=2, offset=4)

        # The page moved down by one within its block, which stays cached.
        assert slugs_of(listing) == slugs_of(await list_articles(client, limit=11))[4:6]
        (first_block,) = queries(statements)
        assert "article_tally" in first_block

    async def test_anonymous_readers_get_a_list_as_it_was_only_while_it_is_rebuilt(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        cache: Cache = app.state.cache
        # However slow the machine, the entry read first is young enough to be answered stale.
        cache.stale_seconds = 60
        author = await register(client)
        await create_article(client, author, title="Before")
        before = await list_articles(client)
        after = (await create_article(client, author, title="After"))["slug"]
        # Another request is rebuilding the first block of the list.
        loading, finish = asyncio.Event(), asyncio.Event()

        async def rebuild_that_fails() -> Any:
            loading.set()
            await finish.wait()
            raise LookupError("the rebuilding request failed")

        rebuilding = asyncio.create_task(
            cache.get_or_load(articles_service._block_entry(0, 0), load=rebuild_that_fails)
        )
        await loading.wait()
        for _ in range(2):
            # Routed, a reader would wait for the rebuild, which only ends when told to below.
            assert await asyncio.wait_for(list_articles(client), timeout=10) == before
        # A caller with a token waits for the rebuild, and is never answered as it was.
        with_token = asyncio.create_task(list_articles(client, author))
        await asyncio.sleep(0.1)
        finish.set()
        with pytest.raises(LookupError):
            await rebuilding
        assert slugs_of(await with_token)[0] == after
        # The answers as it was were not kept: the next reader rebuilds it or gets the new one.
        assert slugs_of(await list_articles(client))[0] == after

    async def test_following_shows_only_for_the_follower(self, client: httpx.AsyncClient) -> None:
        author, fan, other = await register(client), await register(client), await register(client)
        slug = (await create_article(client, author))["slug"]
        for viewer in (None, fan, other):
            await get_profile(client, author.username, viewer)
            await get_article(client, slug, viewer)
            await list_articles(client, viewer)

        response = await client.post(f"/profiles/{author.username}/follow", headers=fan.headers)
        assert response.status_code == 200, response.text

        for viewer, following in ((None, False), (fan, True), (other, False)):
            assert (await get_profile(client, author.username, viewer))["following"] is following
            assert (await get_article(client, slug, viewer))["author"]["following"] is following
            (listed,) = (await list_articles(client, viewer))["articles"]
            assert listed["author"]["following"] is following

        response = await client.delete(f"/profiles/{author.username}/follow", headers=fan.headers)
        assert response.status_code == 200, response.text
        assert (await get_profile(client, author.username, fan))["following"] is False
        assert (await get_article(client, slug, fan))["author"]["following"] is False

    async def test_a_profile_change_reaches_profiles_articles_and_lists(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        slug = (await create_article(client, author))["slug"]
        old_name = author.username
        await get_profile(client, old_name)
        await get_article(client, slug)
        await list_articles(client)
        await list_articles(client, author=old_name)

        new_name = f"{old_name}_renamed"
        response = await client.put(
            "/user",
            json={"user": {"username": new_name, "bio": "New bio", "image": "https://i.test/a"}},
            headers=author.headers,
        )
        assert response.status_code == 200, response.text

        assert (await client.get(f"/profiles/{old_name}")).status_code == 404
        profile = await get_profile(client, new_name)
        assert (profile["bio"], profile["image"]) == ("New bio", "https://i.test/a")
        assert (await get_article(client, slug))["author"]["username"] == new_name
        (listed,) = (await list_articles(client))["articles"]
        assert (listed["author"]["username"], listed["author"]["bio"]) == (new_name, "New bio")
        assert (await list_articles(client, author=old_name))["articlesCount"] == 0
        assert (await list_articles(client, author=new_name))["articlesCount"] == 1

    async def test_a_comment_leaves_the_article_as_it_was(self, client: httpx.AsyncClient) -> None:
        author = await register(client)
        slug = (await create_article(client, author))["slug"]
        before = await get_article(client, slug)

        response = await client.post(
            f"/articles/{slug}/comments",
            json={"comment": {"body": "First!"}},
            headers=author.headers,
        )
        assert response.status_code == 200, response.text

        assert await get_article(client, slug) == before
        comments = (await client.get(f"/articles/{slug}/comments")).json()["comments"]
        assert [comment["body"] for comment in comments] == ["First!"]

    async def test_a_refused_write_changes_nothing_cached(self, client: httpx.AsyncClient) -> None:
        author, stranger = await register(client), await register(client)
        slug = (await create_article(client, author, title="Mine"))["slug"]
        before = await get_article(client, slug)
        response = await client.put(
            f"/articles/{slug}", json={"article": {"title": "Theirs"}}, headers=stranger.headers
        )
        assert response.status_code == 403
        assert await get_article(client, slug) == before


@pytest.mark.parametrize(
    ("head_total", "block_total", "cut"),
    [(20, 20, True), (22, 20, True), (23, 20, False), (20, 21, False)],
    ids=["as-read", "within-slack", "past-slack", "block-newer-than-head"],
)
def test_a_later_block_serves_only_the_publications_its_slack_covers(
    monkeypatch: pytest.MonkeyPatch, head_total: int, block_total: int, cut: bool
) -> None:
    small_blocks(monkeypatch)
    head = {"keys": [], "total": head_total, "nextCursor": None}
    block = {"keys": [[n, 1, f"a-{n}", "2026-01-01T00:00:00+00:00"] for n in range(6)]}
    block.update(total=block_total, nextCursor=None)
    address = articles_service.listing_address(
        articles_service.ArticleFilters(), articles_service.PageRequest(limit=2, offset=4)
    )
    page = articles_service._front_page_of(head, block, address)
    # Block 1 was read with keys 2 to 7; each publication since moves the page one key up.
    published = head_total - block_total
    if not cut:
        assert page is None
        return
    assert page is not None
    keys, total, _ = page
    assert (keys, total) == (block["keys"][2 - published : 4 - published], head_total)


def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Front blocks of 4 keys, and 2 before each after the first, down to the 12th article."""
    monkeypatch.setattr(articles_service, "LIST_BLOCK", 4)
    monkeypatch.setattr(articles_service, "NEWEST_LISTED", 12)
    monkeypatch.setattr(articles_service, "BLOCK_SLACK", 2)


async def assert_front_pages_match_the_list(client: httpx.AsyncClient, count: int) -> None:
    """Pages within a block, ending with one, across two and past the blocks' depth, each read
    twice (cut from the blocks, then from the cache), equal the list read as one page, and each
    `nextCursor` leads to the page that follows."""
    # Longer than a block: a page of its own.
    everything = slugs_of(await list_articles(client, limit=count + 5))
    assert len(everything) == count
    pages = ((0, 2), (2, 2), (4, 4), (3, 2), (6, 2), (8, 3), (9, 3), (10, 2), (12, 2), (14, 2))
    for offset, limit in pages:
        first = await list_articles(client, limit=limit, offset=offset)
        again = await list_articles(client, limit=limit, offset=offset)
        assert again == first
        assert slugs_of(first) == everything[offset : offset + limit], (offset, limit)
        assert first["articlesCount"] == count
        following = everything[offset + limit : offset + 2 * limit]
        if following:
            after = await list_articles(client, limit=limit, cursor=first["nextCursor"])
            assert slugs_of(after) == following
        else:
            assert first["nextCursor"] is None


class TestCacheMechanics:
    @pytest.fixture
    def cache(self, app: FastAPI) -> Cache:
        cache: Cache = app.state.cache
        return cache

    async def test_one_rebuild_serves_concurrent_readers_of_an_expired_key(
        self, cache: Cache
    ) -> None:
        loads = 0

        async def slow_load() -> dict[str, int]:
            nonlocal loads
            loads += 1
            await asyncio.sleep(0.2)
            return {"answer": 42}

        results = await asyncio.gather(
            *(
                cache.get_or_load(CacheAddress("test", "hot", ("hot",)), load=slow_load)
                for _ in range(10)
            )
        )
        assert results == [{"answer": 42}] * 10
        assert loads == 1

    async def test_rows_read_before_a_commit_are_never_served_after_it(self, cache: Cache) -> None:
        versions = iter(["old", "new"])

        async def load_racing_a_write() -> str:
            value = next(versions)
            if value == "old":
                # A write commits and invalidates while this load holds the rows it replaced.
                await cache.invalidate("race")
            return value

        first = await cache.get_or_load(
            CacheAddress("test", "race", ("race",)), load=load_racing_a_write
        )
        second = await cache.get_or_load(
            CacheAddress("test", "race", ("race",)), load=load_racing_a_write
        )
        assert (first, second) == ("old", "new")

    async def test_readers_waiting_on_a_rebuild_take_its_entry_though_a_write_came_meanwhile(
        self, cache: Cache
    ) -> None:
        address = CacheAddress("test", "busy", ("busy",))
        await cache.invalidate("busy")
        loading, finish = asyncio.Event(), asyncio.Event()
        loads: list[str] = []

        async def load(value: str) -> str:
            loads.append(value)
            if value == "first":
                loading.set()
                await finish.wait()
            return value

        first = asyncio.create_task(cache.get_or_load(address, load=lambda: load("first")))
        await loading.wait()
        # Asks while the first rebuild runs, then waits for it.
        waiting = asyncio.create_task(cache.get_or_load(address, load=lambda: load("second")))
        await asyncio.sleep(0.1)
        await cache.invalidate("busy")
        finish.set()
        assert (await first, await waiting) == ("first", "first")
        # Whoever asks after the write does not get what was loaded before it.
        assert await cache.get_or_load(address, load=lambda: load("third")) == "third"
        assert loads == ["first", "third"]

    async def test_a_stale_entry_answers_peekers_while_another_caller_rebuilds_it(
        self, cache: Cache
    ) -> None:
        address = CacheAddress("test", "swr", ("swr",))
        assert await cache.get_or_load(address, load=lambda: _value("old")) == "old"
        await cache.invalidate("swr")
        loading, finish = asyncio.Event(), asyncio.Event()

        async def slow_new() -> str:
            loading.set()
            await finish.wait()
            return "new"

        rebuild = asyncio.create_task(cache.get_or_load(address, load=slow_new))
        await loading.wait()
        stale_before = counted(CACHE_STALE_ANSWERS, "test")
        assert await cache.peek_or_stale(address) == Found("old", stale=True)
        assert counted(CACHE_STALE_ANSWERS, "test") == stale_before + 1
        finish.set()
        assert await rebuild == "new"
        assert await cache.peek_or_stale(address) == Found("new", stale=False)

    async def test_the_first_peeker_of_each_staleness_is_sent_to_rebuild(
        self, cache: Cache
    ) -> None:
        address = CacheAddress("test", "claimed", ("claimed",))
        await cache.get_or_load(address, load=lambda: _value("old"))
        await cache.invalidate("claimed")
        # Nobody rebuilds: the first is sent to, the ones after it are answered meanwhile.
        assert await cache.peek_or_stale(address) is None
        assert await cache.peek_or_stale(address) == Found("old", stale=True)
        # A second write is a staleness of its own, claimed afresh.
        await cache.invalidate("claimed")
        assert await cache.peek_or_stale(address) is None
        assert await cache.peek_or_stale(address) == Found("old", stale=True)
        assert await cache.get_or_load(address, load=lambda: _value("new")) == "new"
        assert await cache.peek_or_stale(address) == Found("new", stale=False)

    async def test_an_entry_loaded_longer_ago_than_the_bound_is_never_answered_stale(
        self, cache: Cache
    ) -> None:
        cache.stale_seconds = 0.2
        address = CacheAddress("test", "aged", ("aged",))
        await cache.get_or_load(address, load=lambda: _value("old"))
        await cache.invalidate("aged")
        assert await cache.peek_or_stale(address) is None  # claims the rebuild
        await asyncio.sleep(0.3)
        assert await cache.peek_or_stale(address) is None
        assert await cache.peek_or_stale(address) is None
        cache.stale_seconds = 0
        await cache.get_or_load(address, load=lambda: _value("new"))
        await cache.invalidate("aged")
        assert await cache.peek_or_stale(address) is None
        assert await cache.peek_or_stale(address) is None

    async def test_keys_read_together_are_read_as_cashews_reads_them(self, cache: Cache) -> None:
        values: dict[str, Any] = {
            "entry": {"generations": ["a1b2"], "value": {"title": "Ünïcode", "n": [1, 2.5, None]}},
            "token": "5f1d",
            "digits": "12345678901234567890",
            "number": 7,
            "list": ["x", 1],
        }
        for key, value in values.items():
            await cache._backend.set(cache._key(key), value, expire=60)
        await cache._backend.set_lock(cache._key("lock"), "98765", expire=60)
        keys = [cache._key(key) for key in [*values, "lock", "absent"]]
        found = await cache._get_many(keys)
        assert found == list(await cache._backend.get_many(*keys))
        assert found[0] == values["entry"]
        # A held rebuild lock reads as present (`peek_or_stale` relies on it), an absent key not.
        assert found[-2] is not None
        assert found[-1] is None

    async def test_invalidated_generations_take_new_tokens_read_alike_that_expire(
        self, cache: Cache
    ) -> None:
        keys = [cache._generation_key(name) for name in ("renewed:a", "renewed:b")]
        await cache.invalidate("renewed:a", "renewed:b")
        first = await cache._get_many(keys)
        await cache.invalidate("renewed:a", "renewed:b")
        second = await cache._get_many(keys)
        assert None not in first
        assert None not in second
        assert all(before != after for before, after in zip(first, second, strict=True))
        assert second == list(await cache._backend.get_many(*keys))
        for key in keys:
            assert 0 < await cache._backend.get_expire(key) <= GENERATION_TTL_SECONDS

    async def test_many_entries_load_together_what_is_missing_or_stale(self, cache: Cache) -> None:
        addresses = [CacheAddress("test", f"many:{name}", (f"many:{name}",)) for name in "abc"]
        loads: list[list[str]] = []

        async def load(missing: list[CacheAddress]) -> dict[str, str]:
            loads.append([address.key for address in missing])
            # "b" does not exist: left out, so None, and never stored.
            return {
                address.key: address.key.upper() for address in missing if "b" not in address.key
            }

        expected = ["MANY:A", None, "MANY:C"]
        assert await cache.get_many_or_load(addresses, load=load) == expected
        assert await cache.peek_many(addresses) is None
        assert await cache.peek_many([addresses[0], addresses[2]]) == ["MANY:A", "MANY:C"]
        await cache.invalidate("many:c")
        assert await cache.get_many_or_load(addresses, load=load) == expected
        assert loads == [["many:a", "many:b", "many:c"], ["many:b", "many:c"]]

    async def test_many_entries_loaded_before_a_commit_are_never_served_after_it(
        self, cache: Cache
    ) -> None:
        address = CacheAddress("test", "many:race", ("many:race",))
        await cache.invalidate("many:race")
        versions = iter(["old", "new"])

        async def load_racing_a_write(missing: list[CacheAddress]) -> dict[str, str]:
            value = next(versions)
            if value == "old":
                await cache.invalidate("many:race")
            return {address.key: value}

        first = await cache.get_many_or_load([address], load=load_racing_a_write)
        second = await cache.get_many_or_load([address], load=load_racing_a_write)
        assert (first, second) == (["old"], ["new"])

    async def test_a_loader_error_propagates_and_nothing_is_stored(self, cache: Cache) -> None:
        calls = 0

        async def failing_load() -> str:
            nonlocal calls
            calls += 1
            raise LookupError("gone")

        for _ in range(2):
            with pytest.raises(LookupError):
                await cache.get_or_load(
                    CacheAddress("test", "broken", ("broken",)), load=failing_load
                )
        assert calls == 2


class TestDisabled:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.model_copy(update={"cache_enabled": False})

    async def test_reads_go_to_the_database(self, client: httpx.AsyncClient, engine: Any) -> None:
        author = await register(client)
        slug = (await create_article(client, author))["slug"]
        await get_article(client, slug)
        with recorded_statements(engine) as statements:
            await get_article(client, slug)
        assert statements != []


class TestRedisUnreachable:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return on_redis(settings, UNREACHABLE_REDIS_URL)

    async def test_reads_and_writes_still_work_without_a_server_error(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        slug = (await create_article(client, author, tagList=["down"]))["slug"]
        assert (await get_article(client, slug))["slug"] == slug
        assert (await list_articles(client))["articlesCount"] == 1
        assert await get_tags(client) == ["down"]
        assert (await get_profile(client, author.username))["username"] == author.username
        response = await client.put(
            f"/articles/{slug}", json={"article": {"title": "Still"}}, headers=author.headers
        )
        assert response.status_code == 200, response.text
        assert (await get_article(client, slug))["title"] == "Still"

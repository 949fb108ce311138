"""The feed's jobs, one at a time: what each event does to the rows, the switches between fan-out
on write and on read, pagination over both sources, and idempotence."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from conduit.feed import handlers, service
from conduit.platform.jobs.registry import Event
from tests.articles.test_queries import (
    LARGE,
    SMALL,
    add_articles_until,
    assert_same_cost,
    build_world,
    recorded_statements,
    statements_for,
)
from tests.feed.support import (
    FAN_OUT,
    FOLLOW_CHANGED,
    SETTLE,
    expected_feed,
    feed_rows,
    get_feed,
    job_context,
    mode_of,
    modes,
    publish,
    queued_feed_jobs,
    rows_of,
    run_feed_jobs,
    run_queued,
    slugs_of,
    whole_feed,
)
from tests.helpers import Account, create_article, delete_article, follow, register, unfollow
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


async def fans_of(client: httpx.AsyncClient, author: Account, count: int) -> list[Account]:
    fans = [await register(client) for _ in range(count)]
    for fan in fans:
        await follow(client, fan, author)
    return fans


async def events_of(session: AsyncSession, event_type: str) -> list[Event]:
    result = await session.execute(
        text("SELECT id, type, occurred_at, data FROM domain_event WHERE type = :type"),
        {"type": event_type},
    )
    return [
        Event(id=event_id, type=kind, occurred_at=occurred_at, data=data)
        for event_id, kind, occurred_at, data in result
    ]


class TestFanOutOnWrite:
    async def test_publication_writes_one_row_per_follower(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author = await register(client)
        fans = await fans_of(client, author, 3)
        stranger = await register(client)
        await run_feed_jobs(jobs)
        slug = await publish(client, session, author)

        assert await feed_rows(session) == set()
        assert (await get_feed(client, fans[0]))["articlesCount"] == 0, "the worker lags"
        assert FAN_OUT in await queued_feed_jobs(jobs)

        await run_feed_jobs(jobs)
        assert await feed_rows(session) == {(fan.username, slug) for fan in fans}
        for fan in fans:
            assert slugs_of(await get_feed(client, fan)) == [slug]
        assert await get_feed(client, stranger) == {
            "articles": [],
            "articlesCount": 0,
            "nextCursor": None,
        }
        assert await mode_of(session, author) == "write"

    async def test_fan_out_is_set_based(
        self, client: httpx.AsyncClient, session: AsyncSession, engine: AsyncEngine, jobs: JobRunner
    ) -> None:
        few, many = await register(client), await register(client)
        await fans_of(client, few, 1)
        await fans_of(client, many, 6)
        await run_feed_jobs(jobs)

        await publish(client, session, few)
        with recorded_statements(engine) as for_one:
            await run_queued(jobs, names=[FAN_OUT])
        await publish(client, session, many)
        with recorded_statements(engine) as for_six:
            await run_queued(jobs, names=[FAN_OUT])

        assert len(await feed_rows(session)) == 7
        assert len(for_one) == len(for_six)

    async def test_follow_backfills_the_authors_articles(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author, other, reader = [await register(client) for _ in range(3)]
        old = await publish(client, session, author, created_at=at(1))
        older = await publish(client, session, author, created_at=at(0))
        others = await publish(client, session, other, created_at=at(2))
        await follow(client, reader, other)
        await run_feed_jobs(jobs)

        await follow(client, reader, author)
        assert await rows_of(session, reader) == {others}
        await run_feed_jobs(jobs)
        assert await rows_of(session, reader) == {others, old, older}
        assert await whole_feed(client, reader) == [others, old, older]

    async def test_unfollow_deletes_only_that_authors_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        dropped, kept, reader, other_reader = [await register(client) for _ in range(4)]
        for author in (dropped, kept):
            await follow(client, reader, author)
        await follow(client, other_reader, dropped)
        dropped_slugs = {await publish(client, session, dropped) for _ in range(2)}
        kept_slug = await publish(client, session, kept)
        await run_feed_jobs(jobs)
        assert await rows_of(session, reader) == {*dropped_slugs, kept_slug}

        await unfollow(client, reader, dropped)
        await run_feed_jobs(jobs)
        assert await rows_of(session, reader) == {kept_slug}
        assert await rows_of(session, other_reader) == dropped_slugs
        assert slugs_of(await get_feed(client, reader)) == [kept_slug]

    async def test_deleting_an_article_deletes_its_rows_in_the_same_transaction(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author = await register(client)
        fans = await fans_of(client, author, 2)
        kept = await publish(client, session, author, created_at=at(0))
        deleted = await publish(client, session, author, created_at=at(1))
        await run_feed_jobs(jobs)
        assert len(await feed_rows(session)) == 4

        await delete_article(client, author, deleted)
        assert await queued_feed_jobs(jobs) == []
        assert await feed_rows(session) == {(fan.username, kept) for fan in fans}
        assert await whole_feed(client, fans[0]) == [kept]

    async def test_deleting_an_account_deletes_its_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author, reader, other = [await register(client) for _ in range(3)]
        await follow(client, reader, author)
        await follow(client, author, other)
        await follow(client, reader, other)
        await publish(client, session, author)
        others = await publish(client, session, other)
        await run_feed_jobs(jobs)
        assert len(await feed_rows(session)) == 3

        # There is no API for it; an operator would delete the row.
        await session.execute(
            text("DELETE FROM user_account WHERE username = :name"), {"name": author.username}
        )
        assert await feed_rows(session) == {(reader.username, others)}

    async def test_an_article_deleted_before_its_fan_out_writes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author = await register(client)
        await fans_of(client, author, 2)
        slug = await publish(client, session, author)
        await delete_article(client, author, slug)
        await run_feed_jobs(jobs)
        assert await feed_rows(session) == set()


@pytest.mark.parametrize("fanout_max_followers", [2])
class TestFanOutOnRead:
    async def test_an_author_over_the_threshold_gets_no_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        famous, modest = await register(client), await register(client)
        fans = await fans_of(client, famous, 3)
        await follow(client, fans[0], modest)
        await run_feed_jobs(jobs)
        assert await mode_of(session, famous) == "read"

        famous_slug = await publish(client, session, famous, created_at=at(1))
        modest_slug = await publish(client, session, modest, created_at=at(0))
        # Read from `article`: in the feeds before any job has run.
        for fan in fans:
            assert famous_slug in await whole_feed(client, fan)
        await run_feed_jobs(jobs)
        assert await feed_rows(session) == {(fans[0].username, modest_slug)}
        assert await whole_feed(client, fans[0]) == [famous_slug, modest_slug]
        assert await whole_feed(client, fans[1]) == [famous_slug]

    async def test_following_an_author_read_from_articles_shows_them_at_once(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        famous = await register(client)
        await fans_of(client, famous, 3)
        slug = await publish(client, session, famous)
        await run_feed_jobs(jobs)
        newcomer = await register(client)
        await follow(client, newcomer, famous)
        assert await whole_feed(client, newcomer) == [slug]
        await unfollow(client, newcomer, famous)
        assert await whole_feed(client, newcomer) == []

    async def test_crossing_the_threshold_upwards_keeps_feeds_whole_and_prunes_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author = await register(client)
        fans = await fans_of(client, author, 2)
        slugs = [await publish(client, session, author, created_at=at(n)) for n in range(3)]
        await run_feed_jobs(jobs)
        assert len(await feed_rows(session)) == 6

        third = await register(client)
        await follow(client, third, author)
        assert await run_queued(jobs, names=[FOLLOW_CHANGED]) == [FOLLOW_CHANGED]
        assert await modes(session) == {author.username: ("read", False)}
        # The rows are still there, but ignored: nothing shows twice.
        assert len(await feed_rows(session)) == 6
        for reader in (*fans, third):
            assert await whole_feed(client, reader) == slugs[::-1]

        await run_feed_jobs(jobs)
        assert await modes(session) == {author.username: ("read", True)}
        assert await feed_rows(session) == set()
        for reader in (*fans, third):
            assert await whole_feed(client, reader) == slugs[::-1]

    async def test_dropping_below_the_threshold_backfills_before_reading_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author = await register(client)
        fans = await fans_of(client, author, 3)
        await run_feed_jobs(jobs)
        assert await mode_of(session, author) == "read"
        big_era = [await publish(client, session, author, created_at=at(n)) for n in range(3)]
        await run_feed_jobs(jobs)
        assert await feed_rows(session) == set()

        await unfollow(client, fans[2], author)
        await run_queued(jobs, names=[FOLLOW_CHANGED])
        assert await modes(session) == {author.username: ("backfill", False)}
        # Backfilling writes the rows of new articles, while feeds still read `article`.
        during = await publish(client, session, author, created_at=at(10))
        await run_queued(jobs, names=[FAN_OUT])
        assert await feed_rows(session) == {(fan.username, during) for fan in fans[:2]}
        expected = [during, *big_era[::-1]]
        assert await whole_feed(client, fans[0]) == expected

        await run_feed_jobs(jobs)
        assert await modes(session) == {author.username: ("write", True)}
        assert await feed_rows(session) == {(fan.username, s) for fan in fans[:2] for s in expected}
        assert await whole_feed(client, fans[0]) == expected
        assert await whole_feed(client, fans[2]) == []

    async def test_switches_settle_in_batches(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        jobs: JobRunner,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        # One article per batch (two followers, three rows a batch).
        monkeypatch.setattr(service, "SETTLE_BATCH_ROWS", 3)
        author = await register(client)
        fans = await fans_of(client, author, 3)
        await run_feed_jobs(jobs)
        slugs = [await publish(client, session, author, created_at=at(n)) for n in range(4)]
        await unfollow(client, fans[2], author)

        ran = await run_feed_jobs(jobs)
        assert ran.count(SETTLE) == 5, "four articles, then the batch that finds none"
        assert await modes(session) == {author.username: ("write", True)}
        assert await rows_of(session, fans[0]) == set(slugs)

        await follow(client, fans[2], author)
        ran = await run_feed_jobs(jobs)
        assert ran.count(SETTLE) == 5, "three followers now: still one article a batch"
        assert await modes(session) == {author.username: ("read", True)}
        assert await feed_rows(session) == set()


@pytest.mark.parametrize("fanout_max_followers", [20])
async def test_hysteresis_keeps_an_author_on_read_until_well_below(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    author = await register(client)
    fans = await fans_of(client, author, 21)
    await run_feed_jobs(jobs)
    assert await mode_of(session, author) == "read"
    await unfollow(client, fans[0], author)
    await unfollow(client, fans[1], author)
    await run_feed_jobs(jobs)
    assert await mode_of(session, author) == "read", "19 followers: above 90% of 20"
    await unfollow(client, fans[2], author)
    await run_feed_jobs(jobs)
    assert await mode_of(session, author) == "write", "18 followers: back to fan-out on write"


class TestWantedMode:
    @pytest.mark.parametrize(
        ("current", "followers", "threshold", "wanted"),
        [
            ("write", 10, 10, "write"),
            ("write", 11, 10, "read"),
            ("backfill", 11, 10, "read"),
            ("backfill", 5, 10, "backfill"),
            ("read", 10, 10, "read"),
            ("read", 9, 10, "backfill"),
            ("read", 0, 0, "backfill"),
            ("write", 1, 0, "read"),
            ("read", 2, 2, "backfill"),
        ],
    )
    def test_threshold_and_hysteresis(
        self, current: str, followers: int, threshold: int, wanted: str
    ) -> None:
        mode = service.wanted_mode(
            service.FanOut(current), followers=followers, threshold=threshold
        )
        assert mode == service.FanOut(wanted)


@pytest.mark.parametrize("fanout_max_followers", [1])
async def test_pages_merge_rows_and_articles(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    reader, rival = await register(client), await register(client)
    famous, modest = await register(client), await register(client)
    for author in (famous, modest):
        await follow(client, reader, author)
    await follow(client, rival, famous)
    created = {}
    for minute in range(10):
        author = famous if minute % 3 == 0 else modest
        created[minute] = await publish(client, session, author, created_at=at(minute))
    # Two articles at the same time: the later id comes first.
    tied = [await publish(client, session, famous, created_at=at(4)) for _ in range(2)]
    await run_feed_jobs(jobs)
    assert await mode_of(session, famous) == "read"
    assert await mode_of(session, modest) == "write"

    expected = await expected_feed(session, reader.username)
    assert expected[:5] == [created[9], created[8], created[7], created[6], created[5]]
    assert expected[5:8] == [tied[1], tied[0], created[4]]
    for limit in (1, 2, 3, 5, 12, 20):
        for offset in range(0, 13):
            page = await get_feed(client, reader, limit=limit, offset=offset)
            assert slugs_of(page) == expected[offset : offset + limit], (limit, offset)
            assert page["articlesCount"] == 12
    assert (await get_feed(client, reader, offset=2**31 - 1))["articles"] == []


async def test_feed_flags_and_shape(client: httpx.AsyncClient, jobs: JobRunner) -> None:
    reader, author = await register(client), await register(client)
    await follow(client, reader, author)
    response = await client.post(
        "/articles",
        json={"article": {"title": "Shape", "description": "d", "body": "b", "tagList": ["x"]}},
        headers=author.headers,
    )
    slug = response.json()["article"]["slug"]
    await client.post(f"/articles/{slug}/favorite", headers=reader.headers)
    await run_feed_jobs(jobs)
    feed = await get_feed(client, reader)
    assert feed["articlesCount"] == 1
    [item] = feed["articles"]
    assert item["slug"] == slug
    assert item["tagList"] == ["x"]
    assert item["favorited"] is True
    assert item["favoritesCount"] == 1
    assert item["author"] == {
        "username": author.username,
        "bio": "",
        "image": "",
        "following": True,
    }
    assert "body" not in item


async def test_the_feed_shows_changes_to_articles_it_has_already_shown(
    client: httpx.AsyncClient, jobs: JobRunner
) -> None:
    # The feed's articles come from the same cached summaries as the lists'.
    reader, author, fan = await register(client), await register(client), await register(client)
    await follow(client, reader, author)
    slug = (await create_article(client, author, title="Before"))["slug"]
    await run_feed_jobs(jobs)
    [before] = (await get_feed(client, reader))["articles"]
    assert (before["title"], before["favoritesCount"]) == ("Before", 0)

    assert (await client.post(f"/articles/{slug}/favorite", headers=fan.headers)).is_success
    [favorited] = (await get_feed(client, reader))["articles"]
    assert favorited["favoritesCount"] == 1
    edit = {"article": {"title": "After"}}
    assert (await client.put(f"/articles/{slug}", json=edit, headers=author.headers)).is_success
    [edited] = (await get_feed(client, reader))["articles"]
    assert edited["title"] == "After"
    bio = {"user": {"bio": "New bio"}}
    assert (await client.put("/user", json=bio, headers=author.headers)).is_success
    [author_changed] = (await get_feed(client, reader))["articles"]
    assert author_changed["author"]["bio"] == "New bio"


class TestIdempotence:
    """The worker handles each event once, but a handler must survive running twice (a
    retried job whose first run committed its work)."""

    @pytest.mark.parametrize("fanout_max_followers", [10_000, 0])
    async def test_handling_every_event_twice_leaves_the_same_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        authors = [await register(client) for _ in range(2)]
        readers = [await register(client) for _ in range(3)]
        for reader in readers:
            await follow(client, reader, authors[0])
        await follow(client, readers[0], authors[1])
        for author in authors:
            await publish(client, session, author)
        await unfollow(client, readers[1], authors[0])
        await run_feed_jobs(jobs)
        rows, states = await feed_rows(session), await modes(session)

        context = job_context(jobs)
        for event in await events_of(session, "article.published"):
            await handlers.fan_out_article(context, event)
        for event_type in ("user.followed", "user.unfollowed"):
            for event in await events_of(session, event_type):
                await handlers.follow_changed(context, event)
        await run_feed_jobs(jobs)
        assert await feed_rows(session) == rows
        assert await modes(session) == states

    async def test_events_handled_out_of_order_end_in_the_same_rows(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author, reader = await register(client), await register(client)
        slug = await publish(client, session, author)
        await follow(client, reader, author)
        await unfollow(client, reader, author)
        await follow(client, reader, author)
        assert await queued_feed_jobs(jobs) == [
            FAN_OUT,
            FOLLOW_CHANGED,
            FOLLOW_CHANGED,
            FOLLOW_CHANGED,
        ]

        context = job_context(jobs)
        events = [
            *await events_of(session, "user.followed"),
            *await events_of(session, "user.unfollowed"),
        ]
        # The unfollow last: it must not take away the rows of the follow after it.
        events.sort(key=lambda event: event.type == "user.unfollowed")
        for event in events:
            await handlers.follow_changed(context, event)
        assert await rows_of(session, reader) == {slug}

    @pytest.mark.parametrize("fanout_max_followers", [2])
    async def test_a_settle_job_run_again_changes_nothing(
        self, client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
    ) -> None:
        author = await register(client)
        fans = await fans_of(client, author, 3)
        await publish(client, session, author)
        await unfollow(client, fans[0], author)
        await run_feed_jobs(jobs)
        rows, states = await feed_rows(session), await modes(session)
        author_id = await session.scalar(
            text("SELECT id FROM user_account WHERE username = :name"), {"name": author.username}
        )
        await handlers.settle_author(job_context(jobs), {"author_id": author_id})
        assert await queued_feed_jobs(jobs) == []
        assert await feed_rows(session) == rows
        assert await modes(session) == states


@pytest.mark.parametrize("fanout_max_followers", [1])
async def test_statements_per_page_do_not_grow_with_either_source(
    client: httpx.AsyncClient, session: AsyncSession, engine: AsyncEngine, jobs: JobRunner
) -> None:
    world = await build_world(client)
    # A second follower each puts two of the caller's three authors over the threshold.
    for author in world.followed[:2]:
        await follow(client, world.strangers[0], author)
    await run_feed_jobs(jobs)
    assert [await mode_of(session, author) for author in world.followed] == [
        "read",
        "read",
        "write",
    ]

    await add_articles_until(client, world, SMALL)
    await run_feed_jobs(jobs)
    small, small_feed = await statements_for(client, engine, "/articles/feed", world.caller.headers)
    assert small_feed["articlesCount"] == SMALL

    await add_articles_until(client, world, LARGE)
    await run_feed_jobs(jobs)
    large, large_feed = await statements_for(client, engine, "/articles/feed", world.caller.headers)
    assert large_feed["articlesCount"] == 12
    authors = {item["author"]["username"] for item in large_feed["articles"]}
    assert authors == {account.username for account in world.followed}
    assert all(item["author"]["following"] for item in large_feed["articles"])
    assert any(item["favorited"] for item in large_feed["articles"])

    assert_same_cost(small, large)

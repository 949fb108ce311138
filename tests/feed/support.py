"""Inspecting the feed: the join-based answer the read model must equal, the rows and modes
behind it, and running some of the queued jobs rather than all."""

import random
from collections.abc import Collection
from datetime import datetime
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.jobs.context import JobContext
from tests.helpers import Account, create_article, slugs_of
from tests.jobs import JobRunner

FAN_OUT = "feed.fan_out_article"
FOLLOW_CHANGED = "feed.follow_changed"
SETTLE = "feed.settle_author"
FEED_JOBS = (FAN_OUT, FOLLOW_CHANGED, SETTLE)


async def get_feed(client: httpx.AsyncClient, viewer: Account, **params: Any) -> dict[str, Any]:
    response = await client.get("/articles/feed", params=params, headers=viewer.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def whole_feed(
    client: httpx.AsyncClient, viewer: Account, *, page_size: int = 7
) -> list[str]:
    """Every slug of the viewer's feed, read page by page, checking on the way that the pages
    agree on the total, hold no article twice, and come newest first."""
    slugs: list[str] = []
    created: list[datetime] = []
    total: int | None = None
    while True:
        page = await get_feed(client, viewer, limit=page_size, offset=len(slugs))
        assert total is None or page["articlesCount"] == total
        total = page["articlesCount"]
        slugs += slugs_of(page)
        created += [datetime.fromisoformat(item["createdAt"]) for item in page["articles"]]
        if len(page["articles"]) < page_size:
            break
    assert len(slugs) == len(set(slugs)), f"an article shows twice: {slugs}"
    assert created == sorted(created, reverse=True)
    assert total == len(slugs)
    return slugs


async def expected_feed(session: AsyncSession, username: str) -> list[str]:
    """The feed as it was read before the read model: the articles of the authors the user
    follows now, newest first."""
    result = await session.execute(
        text(
            "SELECT article.slug FROM article "
            "JOIN follow ON follow.followee_id = article.author_id "
            "JOIN user_account AS reader ON reader.id = follow.follower_id "
            "WHERE lower(reader.username) = lower(:username) "
            "ORDER BY article.created_at DESC, article.id DESC"
        ),
        {"username": username},
    )
    return list(result.scalars())


async def feed_rows(session: AsyncSession) -> set[tuple[str, str]]:
    """Every feed row, as (follower's username, article slug); also checks that each row's
    copies of the article's creation time and author are right."""
    result = await session.execute(
        text(
            "SELECT reader.username, article.slug, "
            "entry.article_created_at = article.created_at AND entry.author_id = article.author_id "
            "FROM feed_entry AS entry "
            "JOIN user_account AS reader ON reader.id = entry.follower_id "
            "JOIN article ON article.id = entry.article_id"
        )
    )
    rows = result.all()
    assert all(copies_match for _, _, copies_match in rows)
    return {(username, slug) for username, slug, _ in rows}


async def rows_of(session: AsyncSession, reader: Account) -> set[str]:
    return {slug for username, slug in await feed_rows(session) if username == reader.username}


async def modes(session: AsyncSession) -> dict[str, tuple[str, bool]]:
    """Each author with a feed state: (mode, settled)."""
    result = await session.execute(
        text(
            "SELECT author.username, state.mode, state.settled FROM feed_author AS state "
            "JOIN user_account AS author ON author.id = state.author_id"
        )
    )
    return {username: (mode, settled) for username, mode, settled in result}


async def mode_of(session: AsyncSession, author: Account) -> str:
    return (await modes(session)).get(author.username, ("write", True))[0]


async def publish(
    client: httpx.AsyncClient,
    session: AsyncSession,
    author: Account,
    *,
    created_at: datetime | None = None,
) -> str:
    """Publish an article through the API; `created_at` replaces its creation time before any
    job has seen it, because every request of a test shares one transaction, hence one now()."""
    slug: str = (await create_article(client, author))["slug"]
    if created_at is not None:
        await session.execute(
            text("UPDATE article SET created_at = :created_at WHERE slug = :slug"),
            {"created_at": created_at, "slug": slug},
        )
    return slug


async def run_queued(
    jobs: JobRunner,
    *,
    names: Collection[str] | None = None,
    rng: random.Random | None = None,
) -> list[str]:
    """Run the due jobs once each, but not the jobs they queue: only those in `names` when
    given; with `rng`, a random selection of them in a random order, as concurrent workers and
    retries may run them. The names of those run."""
    due = await jobs.due()
    if names is not None:
        due = [job for job in due if job.name in names]
    if rng is not None:
        due = rng.sample(due, k=rng.randint(0, len(due)))
    for job in due:
        await jobs.run(job)
    return [job.name for job in due]


async def run_feed_jobs(jobs: JobRunner) -> list[str]:
    """Run the feed's jobs, and those they queue, until none is left: `jobs.run_all()` for the
    feed alone, so that these tests depend on no other module's handlers."""
    return await jobs.run_all(names=FEED_JOBS)


async def queued_feed_jobs(jobs: JobRunner) -> list[str]:
    return [name for name in await jobs.queued() if name in FEED_JOBS]


def job_context(jobs: JobRunner) -> JobContext:
    return jobs.context()

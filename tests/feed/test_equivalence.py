"""The read model gives the same feed as the join it replaced, whatever happens in between.

A seeded random sequence of registrations, follows, unfollows, publications and deletions, with
the feed's jobs run at random points (a random selection of the queued ones, in a random order,
as concurrent workers and retries may run them), and once more at the end. Whenever every job
has run, each feed must equal the join-based answer; at any moment, each feed must be in order
with no article twice and a count that matches. Small batches make each switch between fan-out
on write and on read take several jobs, interleaved with everything else.
"""

import itertools
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.feed import service
from tests.feed.support import (
    FEED_JOBS,
    SETTLE,
    expected_feed,
    feed_rows,
    modes,
    publish,
    run_feed_jobs,
    run_queued,
    whole_feed,
)
from tests.helpers import Account, delete_article, follow, register, unfollow
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio

OPERATIONS = 300
MAX_USERS = 14
T0 = datetime(2026, 1, 1, tzinfo=UTC)

OPERATION_WEIGHTS = {
    "register": 1,
    "follow": 6,
    "unfollow": 4,
    "publish": 4,
    "delete": 1.5,
    "run_some_jobs": 3,
    "check": 1,
}


class Scenario:
    def __init__(
        self,
        client: httpx.AsyncClient,
        session: AsyncSession,
        jobs: JobRunner,
        rng: random.Random,
        threshold: int,
    ) -> None:
        self.client = client
        self.session = session
        self.jobs = jobs
        self.rng = rng
        self.threshold = threshold
        self.users: list[Account] = []
        self.follows: set[tuple[int, int]] = set()
        self.articles: dict[str, int] = {}
        self.jobs_run: list[str] = []
        self.performed: Counter[str] = Counter()
        # Each author's modes, in the order the checks saw them.
        self.modes_seen: dict[str, list[str]] = defaultdict(list)

    async def register(self) -> None:
        self.users.append(await register(self.client))

    async def follow(self) -> None:
        candidates = [
            (fan, author)
            for fan in range(len(self.users))
            for author in range(len(self.users))
            if fan != author and (fan, author) not in self.follows
        ]
        if candidates:
            fan, author = self.rng.choice(candidates)
            await follow(self.client, self.users[fan], self.users[author])
            self.follows.add((fan, author))

    async def unfollow(self) -> None:
        if self.follows:
            fan, author = self.rng.choice(sorted(self.follows))
            await unfollow(self.client, self.users[fan], self.users[author])
            self.follows.discard((fan, author))

    async def publish(self) -> None:
        author = self.rng.randrange(len(self.users))
        # Few distinct times, out of step with the ids: ties and reorderings both happen.
        created_at = T0 + timedelta(minutes=self.rng.randint(0, 30))
        slug = await publish(self.client, self.session, self.users[author], created_at=created_at)
        self.articles[slug] = author

    async def delete(self) -> None:
        if self.articles:
            slug = self.rng.choice(sorted(self.articles))
            await delete_article(self.client, self.users[self.articles.pop(slug)], slug)

    async def run_some_jobs(self) -> None:
        self.jobs_run += await run_queued(self.jobs, names=FEED_JOBS, rng=self.rng)
        await self.note_modes()

    async def note_modes(self) -> None:
        for username, (mode, _) in (await modes(self.session)).items():
            if self.modes_seen[username][-1:] != [mode]:
                self.modes_seen[username].append(mode)

    async def check(self) -> None:
        """Feeds are well formed while jobs are pending; sometimes run them all and compare."""
        for user in self.rng.sample(self.users, k=min(3, len(self.users))):
            await whole_feed(self.client, user, page_size=self.rng.randint(4, 20))
        if self.rng.random() < 0.5:
            await self.run_every_job()
            await self.assert_equal_to_the_join()

    async def run_every_job(self) -> None:
        self.jobs_run += await run_feed_jobs(self.jobs)
        await self.note_modes()

    async def assert_equal_to_the_join(self) -> None:
        for user in self.users:
            expected = await expected_feed(self.session, user.username)
            assert await whole_feed(self.client, user, page_size=self.rng.randint(4, 20)) == (
                expected
            ), user.username

        followers: dict[int, int] = defaultdict(int)
        for _, author in self.follows:
            followers[author] += 1
        states = await modes(self.session)
        written = set()
        for index, user in enumerate(self.users):
            mode, settled = states.get(user.username, ("write", True))
            assert settled, user.username
            # Below 10, the hysteresis margin (a tenth of the threshold) is nothing.
            assert mode == ("read" if followers[index] > self.threshold else "write"), user.username
            if mode == "write":
                written.add(index)
        assert await feed_rows(self.session) == {
            (self.users[fan].username, slug)
            for slug, author in self.articles.items()
            for fan, followed in self.follows
            if followed == author and author in written
        }


@pytest.mark.parametrize(
    ("fanout_max_followers", "seed"),
    [(2, 1), (2, 2), (0, 3), (10_000, 4)],
    ids=["threshold-2-seed-1", "threshold-2-seed-2", "threshold-0", "threshold-high"],
)
async def test_read_model_equals_the_join(
    client: httpx.AsyncClient,
    session: AsyncSession,
    jobs: JobRunner,
    monkeypatch: pytest.MonkeyPatch,
    fanout_max_followers: int,
    seed: int,
) -> None:
    monkeypatch.setattr(service, "SETTLE_BATCH_ROWS", 4)
    rng = random.Random(seed)  # noqa: S311 (reproducible, not secret)
    scenario = Scenario(client, session, jobs, rng, fanout_max_followers)
    for _ in range(6):
        await scenario.register()
    operations = list(OPERATION_WEIGHTS)
    weights = list(OPERATION_WEIGHTS.values())
    for _ in range(OPERATIONS):
        operation = rng.choices(operations, weights)[0]
        if operation == "register" and len(scenario.users) >= MAX_USERS:
            continue
        await getattr(scenario, operation)()
        scenario.performed[operation] += 1
    await scenario.run_every_job()
    await scenario.assert_equal_to_the_join()

    assert all(scenario.performed[name] >= 5 for name in OPERATION_WEIGHTS), scenario.performed
    switches = {pair for seen in scenario.modes_seen.values() for pair in itertools.pairwise(seen)}
    if fanout_max_followers == 2:
        assert {("write", "read"), ("read", "backfill"), ("backfill", "write")} <= switches
    if fanout_max_followers == 10_000:
        assert switches == set()
        assert SETTLE not in scenario.jobs_run
    else:
        assert scenario.jobs_run.count(SETTLE) > 5

"""`conduit seed`: a large, realistic data set, loaded fast, for measuring the app at scale.

It builds users, follows, articles with tags, favorites and comments, and the personal feed's
read model, exactly as the app and its worker would have left them after that history:

- every user's password is the one given, hashed once with the production argon2id cost, so
  `POST /api/users/login` works for any of them;
- usernames and emails are unique ignoring case, slugs are the app's (plain for the first
  article with a title, with the random-looking suffix after), `favorites_count` is the
  number of favorite rows, there are no self-follows, and nothing happens before it could
  have (see `generate`);
- `feed_entry` and `feed_author` are what the feed's jobs write (see `conduit.feed.service`):
  authors with more than FEED_FANOUT_MAX_FOLLOWERS followers are fanned out on read, settled,
  with no rows; every other author's followers have one row per article of theirs;
- id sequences are moved past the seeded ids, so the app's own inserts carry on after them.

Unlike the app, it queues no jobs and stores no domain events: nobody is sent a welcome email
or a webhook, and no notifications are written.

Like the migrations, the seeder works below the domain modules and writes every domain's
tables itself. It stands in for a history of requests and jobs that never ran, and going
through the domain services would cost one request's worth of work per row and raise the
events it must not raise; what it writes is checked against those services by its tests.
"""

import time
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncEngine

from conduit.platform import security
from conduit.platform.db import migrations
from conduit.platform.seed import load
from conduit.platform.seed.generate import Plan
from conduit.platform.seed.load import SEEDED_TABLES, Progress, Report

__all__ = ["Mode", "Options", "Plan", "Progress", "Report", "SeedRefused", "seed"]

# Sorting for the index builds: the largest indexes are a few times the table's key width.
MAINTENANCE_WORK_MEM = "512MB"


class Mode(StrEnum):
    # Only into a database without users.
    empty = "empty"
    # Beside the users there: the new users follow, favorite and comment among themselves.
    append = "append"
    # Empty every table of the app first.
    reset = "reset"


class SeedRefused(RuntimeError):
    """The database is not one this seed may write to; the message says why."""


@dataclass(frozen=True, slots=True)
class Options:
    mode: Mode
    password: str
    batch_size: int
    fanout_threshold: int


async def seed(engine: AsyncEngine, plan: Plan, options: Options, progress: Progress) -> Report:
    """Load the data set in one transaction, then VACUUM and ANALYZE what it wrote."""
    if await migrations.applied_revisions(engine) != migrations.head_revisions():
        raise SeedRefused("is not at the latest schema: run `conduit db upgrade` first")
    password_hash = await security.hash_password(options.password)
    async with engine.connect() as outer:
        connection = (await outer.get_raw_connection()).driver_connection
        if connection is None:
            raise RuntimeError("the engine gave no asyncpg connection")
        # One long transaction that may commit without waiting for the disk: a crash loses
        # the seed, never consistency.
        await connection.execute(
            "SET statement_timeout = 0; SET synchronous_commit = off; "
            f"SET maintenance_work_mem = '{MAINTENANCE_WORK_MEM}'"
        )
        loader = load.Loader(
            connection,
            plan,
            batch_size=options.batch_size,
            fanout_threshold=options.fanout_threshold,
            progress=progress,
        )
        async with connection.transaction():
            if options.mode is Mode.reset:
                await load.reset(connection)
            elif options.mode is Mode.empty and await load.user_count(connection):
                raise SeedRefused(
                    "already has users: pass --append to add to them, or --reset to empty "
                    "the database first"
                )
            report = await loader.run(password_hash)
        # Outside the transaction, as VACUUM must be: the visibility map it sets is what lets
        # the feed count its rows from the index alone, and the statistics pick the plans.
        progress.start("vacuum analyze", None)
        began = time.perf_counter()
        await connection.execute(f"VACUUM (ANALYZE) {', '.join(SEEDED_TABLES)}")
        report.seconds["vacuum analyze"] = time.perf_counter() - began
        progress.finish("vacuum analyze", report.seconds["vacuum analyze"], None)
    return report

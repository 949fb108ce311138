"""Writing the data set: bulk COPY in one transaction, then the feed read model in SQL.

The whole load is one transaction, so a failed or interrupted seed leaves the database as it
was. Inside it, the foreign keys and the indexes of the seeded tables are dropped before the
rows go in and built again afterwards (one sort per index instead of a million inserts into
it, one join per foreign key instead of a lookup per row); the definitions are read from the
catalog, so they come back exactly as the migrations made them, and validated. Only the
indexes that other tables' foreign keys depend on stay: the primary keys of `user_account`,
`article` and `comment`, whose rows arrive in id order anyway.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, TypeVar

import asyncpg

from conduit.platform.seed import generate
from conduit.platform.seed.generate import Plan, Skeleton, Start, Taken

T = TypeVar("T")

BASE_TABLES = (
    "user_account",
    "tag",
    "article",
    "article_tag",
    "follow",
    "favorite",
    "comment",
)
FEED_TABLES = ("feed_author", "feed_entry")
SEEDED_TABLES = BASE_TABLES + FEED_TABLES
IDENTITY_TABLES = ("user_account", "tag", "article", "comment")
# Left alone by --reset: the queue's periodic schedules are configuration, and the revision.
KEPT_BY_RESET = ("alembic_version", "pgqueuer_schedules")
# Batches of followers the feed rows are written in: each joins its follows with every
# article, so a few large ones (measured: one statement is 1.5 times as fast as 50).
FEED_BATCHES = 10


class Progress:
    """What the loader reports as it goes; the CLI draws progress bars from it."""

    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, phase: str, amount: int) -> None:
        pass

    def finish(self, phase: str, seconds: float, rows: int | None) -> None:
        pass


@dataclass(slots=True)
class Report:
    seconds: dict[str, float] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Rebuild:
    """How to build again a constraint or index that was dropped for the load."""

    table: str
    name: str
    statement: str


async def user_count(connection: asyncpg.Connection) -> int:
    return int(await connection.fetchval("SELECT count(*) FROM user_account"))


async def reset(connection: asyncpg.Connection) -> None:
    """Empty every table of the app (accounts, content, feeds, sessions, notifications,
    webhooks, events and queued jobs) and restart their ids."""
    tables = await connection.fetchval(
        "SELECT string_agg(format('%I', tablename), ', ') FROM pg_tables "
        "WHERE schemaname = current_schema() AND tablename <> ALL($1::text[])",
        list(KEPT_BY_RESET),
    )
    if tables:
        # Identifiers from the catalog, quoted by format('%I').
        await connection.execute(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")


async def _starts(connection: asyncpg.Connection) -> Start:
    values = {}
    for table in IDENTITY_TABLES:
        # Table names are constants of this module.
        query = f"SELECT coalesce(max(id), 0) FROM {table}"  # noqa: S608
        values[table] = int(await connection.fetchval(query))
    return Start(
        user=values["user_account"] + 1,
        article=values["article"] + 1,
        comment=values["comment"] + 1,
        tag=values["tag"] + 1,
    )


async def _taken(connection: asyncpg.Connection, start: Start) -> Taken:
    taken = Taken()
    if start.user > 1:
        async for row in connection.cursor(
            "SELECT lower(username), lower(email) FROM user_account", prefetch=50_000
        ):
            taken.usernames.add(row[0])
            taken.emails.add(row[1])
    if start.article > 1:
        async for row in connection.cursor("SELECT slug FROM article", prefetch=50_000):
            taken.slugs.add(row[0])
    tags = await connection.fetch("SELECT id, name FROM tag")
    taken.tags = {name: tag_id for tag_id, name in tags}
    return taken


async def _drop_for_load(connection: asyncpg.Connection, tables: Sequence[str]) -> list[_Rebuild]:
    """Drop the tables' foreign keys and every index no other table's foreign key depends
    on; the statements that build them again, in an order that works."""
    foreign_keys = await connection.fetch(
        "SELECT conrelid::regclass::text AS table, quote_ident(conname) AS name, "
        "pg_get_constraintdef(oid) AS definition FROM pg_constraint "
        "WHERE contype = 'f' AND conrelid = ANY($1::text[]::regclass[])",
        list(tables),
    )
    for row in foreign_keys:
        await connection.execute(f"ALTER TABLE {row['table']} DROP CONSTRAINT {row['name']}")
    indexes = await connection.fetch(
        "SELECT index.indrelid::regclass::text AS table, "
        "index.indexrelid::regclass::text AS index, pg_get_indexdef(index.indexrelid) AS indexdef, "
        "quote_ident(owner.conname) AS constraint, pg_get_constraintdef(owner.oid) AS definition "
        "FROM pg_index AS index "
        "LEFT JOIN pg_constraint AS owner "
        "  ON owner.conindid = index.indexrelid AND owner.contype IN ('p', 'u') "
        "WHERE index.indrelid = ANY($1::text[]::regclass[]) AND NOT EXISTS ("
        "  SELECT 1 FROM pg_constraint AS fk WHERE fk.contype = 'f' "
        "  AND fk.conindid = index.indexrelid)",
        list(tables),
    )
    rebuilds: list[_Rebuild] = []
    # Unique keys and primary keys first: the foreign keys need them.
    for row in sorted(indexes, key=lambda row: row["constraint"] is None):
        if row["constraint"] is not None:
            await connection.execute(
                f"ALTER TABLE {row['table']} DROP CONSTRAINT {row['constraint']}"
            )
            statement = (
                f"ALTER TABLE {row['table']} ADD CONSTRAINT {row['constraint']} {row['definition']}"
            )
            rebuilds.append(_Rebuild(row["table"], row["constraint"], statement))
        else:
            await connection.execute(f"DROP INDEX {row['index']}")
            rebuilds.append(_Rebuild(row["table"], row["index"], row["indexdef"]))
    for row in foreign_keys:
        statement = f"ALTER TABLE {row['table']} ADD CONSTRAINT {row['name']} {row['definition']}"
        rebuilds.append(_Rebuild(row["table"], row["name"], statement))
    return rebuilds


def _batches(rows: Iterator[T], size: int) -> Iterator[list[T]]:
    while batch := list(islice(rows, size)):
        yield batch


class Loader:
    def __init__(
        self,
        connection: asyncpg.Connection,
        plan: Plan,
        *,
        batch_size: int,
        fanout_threshold: int,
        progress: Progress,
    ) -> None:
        self.connection = connection
        self.plan = plan
        self.batch_size = batch_size
        self.fanout_threshold = fanout_threshold
        self.progress = progress
        self.report = Report()

    async def _phase(
        self, phase: str, total: int | None, work: Callable[[], Awaitable[int | None]]
    ) -> None:
        self.progress.start(phase, total)
        began = time.perf_counter()
        rows = await work()
        seconds = time.perf_counter() - began
        self.report.seconds[phase] = seconds
        if rows is not None:
            self.report.rows[phase] = rows
        self.progress.finish(phase, seconds, rows)

    async def _copy(
        self, table: str, columns: Sequence[str], rows: Iterator[tuple[Any, ...]]
    ) -> int:
        """COPY the rows in batches, making the next batch in a thread while the server
        takes the current one: generating and storing overlap on two cores."""
        batches = _batches(rows, self.batch_size)
        written = 0
        upcoming = asyncio.create_task(asyncio.to_thread(next, batches, None))
        while (batch := await upcoming) is not None:
            upcoming = asyncio.create_task(asyncio.to_thread(next, batches, None))
            await self.connection.copy_records_to_table(table, records=batch, columns=list(columns))
            written += len(batch)
            self.progress.advance(table, len(batch))
        return written

    async def _copy_phase(
        self,
        table: str,
        columns: Sequence[str],
        total: int | None,
        rows: Callable[[], Iterator[tuple[Any, ...]]],
    ) -> None:
        async def work() -> int:
            return await self._copy(table, columns, rows())

        await self._phase(table, total, work)

    async def _rebuild(self, phase: str, rebuilds: Sequence[_Rebuild]) -> None:
        async def work() -> None:
            for rebuild in rebuilds:
                await self.connection.execute(rebuild.statement)
                self.progress.advance(phase, 1)

        await self._phase(phase, len(rebuilds), work)

    async def run(self, password_hash: str) -> Report:
        connection, plan = self.connection, self.plan
        start = await _starts(connection)
        taken = await _taken(connection, start)
        base_rebuilds = await _drop_for_load(connection, BASE_TABLES)
        feed_rebuilds = await _drop_for_load(connection, FEED_TABLES)

        skeleton = Skeleton.build(plan)
        tags, new_tags = generate.tag_ids(plan, start, taken)
        expected_articles = plan.articles
        await self._copy_phase(
            "user_account",
            generate.USER_COLUMNS,
            plan.users,
            lambda: generate.users(plan, skeleton, start, taken, password_hash),
        )
        await self._copy_phase("tag", generate.TAG_COLUMNS, len(new_tags), lambda: iter(new_tags))
        await self._copy_phase(
            "article",
            generate.ARTICLE_COLUMNS,
            expected_articles,
            lambda: generate.articles(plan, skeleton, start, taken),
        )
        await self._copy_phase(
            "article_tag",
            generate.ARTICLE_TAG_COLUMNS,
            None,
            lambda: generate.article_tags(plan, skeleton, start, tags),
        )
        await self._copy_phase(
            "follow",
            generate.FOLLOW_COLUMNS,
            round(plan.users * plan.follows_per_user),
            lambda: generate.follows(plan, skeleton, start),
        )
        await self._copy_phase(
            "favorite",
            generate.FAVORITE_COLUMNS,
            round(plan.articles * plan.favorites_per_article),
            lambda: generate.favorites(plan, skeleton, start),
        )
        await self._copy_phase(
            "comment",
            generate.COMMENT_COLUMNS,
            round(plan.articles * plan.comments_per_article),
            lambda: generate.comments(plan, skeleton, start),
        )
        await self._rebuild("indexes", base_rebuilds)
        # Statistics for the feed's joins, which would otherwise be planned for empty tables.
        await self._phase("analyze", None, self._analyze)
        await self._phase("feed_author", None, lambda: self._feed_authors(start))
        await self._phase("feed_entry", FEED_BATCHES, lambda: self._feed_entries(start))
        await self._rebuild("feed indexes", feed_rebuilds)
        await self._phase("sequences", None, self._sequences)
        return self.report

    async def _feed_authors(self, start: Start) -> int:
        """Each new author's fan-out mode as the feed's jobs leave it after this history: a
        row for every author a job has touched (followed, or published), fanned out on read
        since their (threshold + 1)-th follower if they have more, on write otherwise, and
        settled either way."""
        status = await self.connection.execute(
            "WITH followed AS ("
            "  SELECT followee_id AS author_id, count(*) AS followers, "
            "  min(created_at) AS first_at FROM follow "
            "  WHERE follower_id >= $1 GROUP BY followee_id"
            "), published AS ("
            "  SELECT author_id, min(created_at) AS first_at FROM article "
            "  WHERE id >= $2 GROUP BY author_id"
            ") "
            "INSERT INTO feed_author (author_id, mode, settled, mode_changed_at) "
            "SELECT author_id, "
            "  CASE WHEN coalesce(followed.followers, 0) > $3 THEN 'read' ELSE 'write' END, "
            "  true, "
            "  CASE WHEN coalesce(followed.followers, 0) > $3 THEN ("
            "    SELECT follow.created_at FROM follow "
            "    WHERE follow.followee_id = followed.author_id "
            "    ORDER BY follow.created_at OFFSET $3 LIMIT 1"
            "  ) ELSE least(followed.first_at, published.first_at) END "
            "FROM followed FULL JOIN published USING (author_id)",
            start.user,
            start.article,
            self.fanout_threshold,
        )
        return int(status.split()[-1])

    async def _feed_entries(self, start: Start) -> int:
        """One row per follower and article of each author fanned out on write, what the
        publication and follow jobs write; in batches of followers."""
        last = start.user + self.plan.users - 1
        step = max(1, -(-self.plan.users // FEED_BATCHES))
        written = 0
        for first in range(start.user, last + 1, step):
            status = await self.connection.execute(
                "INSERT INTO feed_entry (follower_id, article_created_at, article_id, author_id) "
                "SELECT follow.follower_id, article.created_at, article.id, article.author_id "
                "FROM follow JOIN article ON article.author_id = follow.followee_id "
                "WHERE follow.follower_id BETWEEN $1 AND $2 AND NOT EXISTS ("
                "  SELECT 1 FROM feed_author WHERE feed_author.author_id = follow.followee_id "
                "  AND feed_author.mode = 'read'"
                ")",
                first,
                min(last, first + step - 1),
            )
            written += int(status.split()[-1])
            self.progress.advance("feed_entry", 1)
        return written

    async def _analyze(self) -> None:
        await self.connection.execute(f"ANALYZE {', '.join(BASE_TABLES)}")

    async def _sequences(self) -> None:
        """Move each id sequence past the largest id, so that the app's next insert gets a
        new one."""
        for table in IDENTITY_TABLES:
            # Table names are constants of this module.
            await self.connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) "  # noqa: S608
                f"FROM {table} HAVING max(id) IS NOT NULL"
            )

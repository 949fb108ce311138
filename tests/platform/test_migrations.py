from collections.abc import AsyncIterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect, text
from sqlalchemy.ext.asyncio import create_async_engine

from conduit.platform.db import migrations
from conduit.platform.db.metadata import metadata
from conduit.platform.db.migrations import include_name
from conduit.platform.jobs.models import QUEUE_TABLES
from conduit.platform.settings import to_async_database_url
from tests.conftest import database_name, drop_database, recreate_database

pytestmark = pytest.mark.anyio

TABLES = {
    "user_account",
    "refresh_token_family",
    "refresh_token",
    "follow",
    "article",
    "tag",
    "article_tag",
    "favorite",
    "comment",
    "domain_event",
    "event_handling",
    *QUEUE_TABLES,
    "notification",
    "webhook_endpoint",
    "webhook_delivery",
    "webhook_destination",
    "feed_entry",
    "feed_author",
    "article_tally",
}


@pytest.fixture
async def empty_database_url(server_url: str) -> AsyncIterator[str]:
    name = database_name("conduit_migrations")
    yield await recreate_database(server_url, name)
    await drop_database(server_url, name)


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(to_async_database_url(url))
    try:
        async with engine.connect() as connection:
            names = await connection.run_sync(lambda sync: inspect(sync).get_table_names())
    finally:
        await engine.dispose()
    return set(names) - {"alembic_version"}


async def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    head = ScriptDirectory.from_config(migrations.alembic_config()).get_current_head()

    await migrations.upgrade(empty_database_url)
    assert await migrations.current_revision(empty_database_url) == head
    assert await _tables(empty_database_url) == TABLES

    await migrations.downgrade(empty_database_url, "base")
    assert await migrations.current_revision(empty_database_url) is None
    assert await _tables(empty_database_url) == set()

    await migrations.upgrade(empty_database_url)
    assert await _tables(empty_database_url) == TABLES


async def test_every_step_downgrades_and_upgrades_again(empty_database_url: str) -> None:
    script = ScriptDirectory.from_config(migrations.alembic_config())
    revisions = [revision.revision for revision in script.walk_revisions("base", "heads")]
    for revision in reversed(revisions):
        await migrations.upgrade(empty_database_url, revision)
        await migrations.downgrade(empty_database_url, "-1")
        await migrations.upgrade(empty_database_url, revision)
    assert await migrations.current_revision(empty_database_url) == script.get_current_head()


async def test_models_match_migrations(database_url: str) -> None:
    """A model change without a migration fails here, before it fails in production."""
    engine = create_async_engine(to_async_database_url(database_url))

    def differences(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "include_name": include_name}
        )
        return list(compare_metadata(context, metadata))

    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(differences) == []
    finally:
        await engine.dispose()


async def _storage_parameters(url: str, table: str) -> set[str]:
    engine = create_async_engine(to_async_database_url(url))
    try:
        async with engine.connect() as connection:
            options = await connection.scalar(
                text("SELECT reloptions FROM pg_class WHERE oid = CAST(:table AS regclass)"),
                {"table": table},
            )
    finally:
        await engine.dispose()
    return set(options or [])


async def test_the_job_queue_tables_carry_their_autovacuum_settings(
    empty_database_url: str,
) -> None:
    """Each dequeue reads past the queue's dead rows until a vacuum removes them: autovacuum
    must take the queue after a thousand dead rows, unthrottled, however long the backlog."""
    await migrations.upgrade(empty_database_url)
    queue = await _storage_parameters(empty_database_url, "pgqueuer")
    assert {"autovacuum_vacuum_threshold=1000", "autovacuum_vacuum_cost_delay=0"} <= queue

    await migrations.downgrade(empty_database_url, "-1")
    assert await _storage_parameters(empty_database_url, "pgqueuer") == set()

"""Programmatic Alembic: upgrade, downgrade and report the schema revision of a database."""

from functools import lru_cache
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.environment import NameFilterParentNames, NameFilterType
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conduit.platform.jobs.models import QUEUE_TABLES
from conduit.platform.settings import to_async_database_url


def include_name(name: str | None, type_: NameFilterType, _parents: NameFilterParentNames) -> bool:
    """What autogenerate compares: all but the job queue's tables, which the migration that
    installs pgqueuer's schema owns."""
    return not (type_ == "table" and name in QUEUE_TABLES)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(files("conduit") / "migrations"))
    config.set_main_option(
        "file_template", "%%(year)d-%%(month).2d-%%(day).2d-%%(hour).2d%%(minute).2d_%%(slug)s"
    )
    return config


async def _run(url: str, operation: str, revision: str) -> None:
    engine = create_async_engine(to_async_database_url(url))
    try:
        async with engine.connect() as connection:

            def apply(sync_connection: Connection) -> None:
                config = alembic_config()
                config.attributes["connection"] = sync_connection
                if operation == "upgrade":
                    command.upgrade(config, revision)
                else:
                    command.downgrade(config, revision)

            await connection.run_sync(apply)
            await connection.commit()
    finally:
        await engine.dispose()


async def upgrade(url: str, revision: str = "head") -> None:
    await _run(url, "upgrade", revision)


async def downgrade(url: str, revision: str = "-1") -> None:
    await _run(url, "downgrade", revision)


@lru_cache
def head_revisions() -> frozenset[str]:
    """The revisions the migration scripts lead to (one, unless branches are unmerged)."""
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


async def applied_revisions(engine: AsyncEngine) -> frozenset[str]:
    """The revisions the database behind `engine` is at; empty for an unmigrated database.

    Read with plain SQL: alembic's MigrationContext logs two lines each time, and a startup
    probe asks every few seconds.
    """
    async with engine.connect() as connection:
        if not await connection.scalar(text("SELECT to_regclass('alembic_version') IS NOT NULL")):
            return frozenset()
        return frozenset(await connection.scalars(text("SELECT version_num FROM alembic_version")))


async def current_revision(url: str) -> str | None:
    engine = create_async_engine(to_async_database_url(url))
    try:
        async with engine.connect() as connection:

            def read(sync_connection: Connection) -> str | None:
                return MigrationContext.configure(sync_connection).get_current_revision()

            return await connection.run_sync(read)
    finally:
        await engine.dispose()

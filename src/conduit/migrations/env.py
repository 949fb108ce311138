"""Alembic environment.

`conduit.platform.db.migrations` hands a live connection in `config.attributes["connection"]`;
the plain `alembic` command instead connects to the URL in `sqlalchemy.url` (set from
DATABASE_URL by that module, or by `alembic -x url=...`).
"""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from conduit.platform.db.metadata import metadata
from conduit.platform.db.migrations import include_name
from conduit.platform.settings import to_async_database_url

config = context.config


def run_with_connection(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_with_url(url: str) -> None:
    engine = create_async_engine(to_async_database_url(url))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_with_connection)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_with_connection(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise RuntimeError("no database URL: set DATABASE_URL or pass -x url=postgresql://...")
    asyncio.run(run_with_url(url))


if context.is_offline_mode():
    raise RuntimeError("offline (--sql) migrations are not supported")
run_migrations_online()

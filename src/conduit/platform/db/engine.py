"""Engine and session factory built from settings, by the app's lifespan and never at import."""

import time
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import ConnectionPoolEntry, PoolProxiedConnection

from conduit.platform.settings import Settings, to_async_database_url

# A pooled connection idle longer than this is pinged before it is handed out (and replaced if
# it is dead). One returned moments ago is not: SQLAlchemy's `pool_pre_ping` pinged every
# checkout, with three round trips on asyncpg (BEGIN, the ping, ROLLBACK), which on a busy
# server were more than many requests' own queries. A connection that dies while in steady use
# fails the statement that finds it so, and that failure recycles the whole pool.
PING_AFTER_IDLE_SECONDS = 2.0
_RETURNED_AT = "conduit.returned_at"


def create_engine(settings: Settings, database_url: str) -> AsyncEngine:
    engine = create_async_engine(
        to_async_database_url(database_url),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_timeout=settings.db_pool_timeout_seconds,
        connect_args={
            "server_settings": {
                "statement_timeout": str(settings.db_statement_timeout_ms),
                "application_name": "conduit",
            }
        },
    )
    _ping_idle_connections(engine.sync_engine)
    return engine


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def note_return(_: Any, entry: ConnectionPoolEntry) -> None:
        entry.info[_RETURNED_AT] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def ping_if_idle(
        connection: Any, entry: ConnectionPoolEntry, __: PoolProxiedConnection
    ) -> None:
        returned_at = entry.info.get(_RETURNED_AT)
        if returned_at is None or time.monotonic() - returned_at < PING_AFTER_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(connection)
        except Exception as error:
            # The pool discards the connection and checks out another.
            raise DisconnectionError("a pooled connection failed its ping") from error


def create_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)

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
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction
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


# In a session's `info`: the session only reads (see `create_read_sessionmaker`).
READ_ONLY = "conduit.read_only"


class ReadOnlySessionError(RuntimeError):
    """A read-only session was asked to write."""


@event.listens_for(Session, "do_orm_execute")
def _refuse_write_statements(state: ORMExecuteState) -> None:
    if state.session.info.get(READ_ONLY) and (
        state.is_insert or state.is_update or state.is_delete
    ):
        raise ReadOnlySessionError("a read-only session must not write")


@event.listens_for(Session, "before_flush")
def _refuse_flushes(session: Session, _: UOWTransaction, __: Any) -> None:
    if session.info.get(READ_ONLY) and (session.new or session.dirty or session.deleted):
        raise ReadOnlySessionError("a read-only session must not write")


def create_read_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """Sessions for requests that only read. Their statements run in autocommit, each on its
    own and seeing the data as of its own start, which is all a read of a page or an article
    needs, without the BEGIN and COMMIT round trips around them; and they refuse to write,
    which outside a transaction could not be undone."""
    return async_sessionmaker(
        engine.execution_options(isolation_level="AUTOCOMMIT"),
        expire_on_commit=False,
        info={READ_ONLY: True},
    )

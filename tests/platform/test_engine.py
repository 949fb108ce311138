import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from conduit.articles.models import Tag
from conduit.platform.db import engine as engine_module
from conduit.platform.db.engine import (
    READ_ONLY,
    ReadOnlySessionError,
    create_engine,
    create_read_sessionmaker,
    create_sessionmaker,
)
from conduit.platform.db.session import get_session
from conduit.platform.settings import Settings, to_async_database_url

pytestmark = pytest.mark.anyio

POOL_SIZE = 2


async def test_a_busy_pool_keeps_its_connections(settings: Settings, database_url: str) -> None:
    """Under load beyond the pool, callers wait for a pooled connection. With overflow, each
    round opened new PostgreSQL backends and closed them again on return to the full pool."""
    engine = create_engine(settings.model_copy(update={"db_pool_size": POOL_SIZE}), database_url)
    backends: set[int] = set()

    async def query() -> None:
        async with engine.connect() as connection:
            backend = await connection.scalar(text("SELECT pg_backend_pid() FROM pg_sleep(0.02)"))
            assert backend is not None
            backends.add(backend)

    try:
        for _ in range(3):
            await asyncio.gather(*(query() for _ in range(3 * POOL_SIZE)))
    finally:
        await engine.dispose()
    assert len(backends) == POOL_SIZE


async def _backend_of(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        backend = await connection.scalar(text("SELECT pg_backend_pid()"))
    assert isinstance(backend, int)
    return backend


async def _terminate(database_url: str, backend: int) -> None:
    killer = create_async_engine(to_async_database_url(database_url), poolclass=NullPool)
    try:
        async with killer.connect() as connection:
            await connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
    finally:
        await killer.dispose()


@pytest.fixture
async def one_connection(settings: Settings, database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings.model_copy(update={"db_pool_size": 1}), database_url)
    yield engine
    await engine.dispose()


async def test_only_a_connection_idle_for_a_while_is_pinged(
    one_connection: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pings = 0
    ping = one_connection.dialect.do_ping

    def counted_ping(connection: Any) -> bool:
        nonlocal pings
        pings += 1
        return ping(connection)

    monkeypatch.setattr(one_connection.dialect, "do_ping", counted_ping)
    # A new connection, then the same one back within moments.
    for _ in range(3):
        await _backend_of(one_connection)
    assert pings == 0
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    for _ in range(3):
        await _backend_of(one_connection)
    assert pings == 3


async def test_a_connection_that_died_while_idle_is_replaced_before_use(
    one_connection: AsyncEngine, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend = await _backend_of(one_connection)
    await _terminate(database_url, backend)
    monkeypatch.setattr(engine_module, "PING_AFTER_IDLE_SECONDS", 0.0)
    assert await _backend_of(one_connection) != backend


async def test_a_connection_that_died_in_use_fails_once_then_the_pool_recovers(
    one_connection: AsyncEngine, database_url: str
) -> None:
    backend = await _backend_of(one_connection)
    await _terminate(database_url, backend)
    with pytest.raises(DBAPIError) as failure:
        await _backend_of(one_connection)
    assert failure.value.connection_invalidated
    assert await _backend_of(one_connection) != backend


class TestReadOnlySessions:
    """A `GET` reads through a session without a transaction, which refuses to write."""

    async def test_each_statement_is_a_transaction_of_its_own(
        self, settings: Settings, database_url: str
    ) -> None:
        engine = create_engine(settings, database_url)
        try:
            async with create_read_sessionmaker(engine)() as session:
                # No BEGIN before them: each statement is its own transaction.
                first = await session.scalar(text("SELECT pg_current_xact_id()::text"))
                second = await session.scalar(text("SELECT pg_current_xact_id()::text"))
                assert first != second
                await session.commit()
            async with create_sessionmaker(engine)() as session:
                first = await session.scalar(text("SELECT pg_current_xact_id()::text"))
                second = await session.scalar(text("SELECT pg_current_xact_id()::text"))
                assert first == second
                await session.rollback()
        finally:
            await engine.dispose()

    async def test_refuses_to_write(self, settings: Settings, database_url: str) -> None:
        engine = create_engine(settings, database_url)
        try:
            async with create_read_sessionmaker(engine)() as session:
                with pytest.raises(ReadOnlySessionError):
                    await session.execute(insert(Tag).values(name="never-written"))
                with pytest.raises(ReadOnlySessionError):
                    await session.execute(update(Tag).values(articles_count=0))
                session.add(Tag(name="never-flushed"))
                with pytest.raises(ReadOnlySessionError):
                    await session.flush()
            async with create_sessionmaker(engine)() as session:
                assert await session.scalar(select(Tag).where(Tag.name.like("never-%"))) is None
        finally:
            await engine.dispose()

    @pytest.mark.parametrize(
        ("method", "read_only"),
        [("GET", True), ("HEAD", True), ("POST", False), ("PUT", False), ("DELETE", False)],
    )
    async def test_safe_methods_get_one(
        self, settings: Settings, database_url: str, method: str, read_only: bool
    ) -> None:
        engine = create_engine(settings, database_url)
        app = FastAPI()
        app.state.sessionmaker = create_sessionmaker(engine)
        app.state.read_sessionmaker = create_read_sessionmaker(engine)
        request = Request({"type": "http", "method": method, "app": app, "headers": []})
        sessions = get_session(request)
        try:
            session = await anext(sessions)
            assert bool(session.info.get(READ_ONLY)) is read_only
        finally:
            await sessions.aclose()
            await engine.dispose()

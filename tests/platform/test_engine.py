import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

from conduit.platform.db import engine as engine_module
from conduit.platform.db.engine import create_engine
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

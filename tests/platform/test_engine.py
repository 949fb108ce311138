import asyncio

import pytest
from sqlalchemy import text

from conduit.platform.db.engine import create_engine
from conduit.platform.settings import Settings

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

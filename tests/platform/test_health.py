"""Health endpoints: what a load balancer or Kubernetes probe sees when the process, the
database, Redis or the schema is fine, and when it is not."""

import socket
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from conduit.app import create_app
from conduit.platform.db import migrations
from conduit.platform.redis import create_redis
from conduit.platform.settings import Settings
from tests.conftest import drop_database, recreate_database
from tests.helpers import errors
from tests.platform.server import free_port

pytestmark = pytest.mark.anyio

HEALTH = "http://conduit.test/health"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers, like a hung server."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.fixture
async def dead_engine() -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(f"postgresql+asyncpg://conduit@127.0.0.1:{free_port()}/conduit")
    yield engine
    await engine.dispose()


def head() -> str:
    [revision] = migrations.head_revisions()
    return revision


async def test_live_answers_without_dependencies(client: httpx.AsyncClient) -> None:
    response = await client.get(f"{HEALTH}/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_ready_when_the_database_answers(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    app.state.engine = engine
    response = await client.get(f"{HEALTH}/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok"}}


async def test_not_ready_when_the_database_is_down(
    app: FastAPI, client: httpx.AsyncClient, dead_engine: AsyncEngine
) -> None:
    app.state.engine = dead_engine
    response = await client.get(f"{HEALTH}/ready")
    assert response.status_code == 503
    [message] = errors(response)["database"]
    assert message.startswith("is unreachable (")
    assert "127.0.0.1" not in message


async def test_ready_when_the_database_and_redis_answer(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine, redis_server_url: str
) -> None:
    app.state.engine = engine
    app.state.redis = create_redis(
        app.state.settings.model_copy(update={"redis_url": redis_server_url})
    )
    try:
        response = await client.get(f"{HEALTH}/ready")
    finally:
        await app.state.redis.aclose()
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_not_ready_when_redis_is_configured_and_down(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    app.state.engine = engine
    app.state.redis = create_redis(
        app.state.settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}"})
    )
    try:
        response = await client.get(f"{HEALTH}/ready")
    finally:
        await app.state.redis.aclose()
    assert response.status_code == 503
    assert errors(response) == {"redis": ["is unreachable (ConnectionError)"]}


async def test_a_hung_dependency_fails_within_the_timeout(
    settings: Settings, engine: AsyncEngine, silent_port: int
) -> None:
    app = create_app(settings.model_copy(update={"health_check_timeout_seconds": 0.3}))
    app.state.engine = engine
    app.state.redis = create_redis(
        settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{silent_port}"})
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport) as client:
        response = await client.get(f"{HEALTH}/ready")
    await app.state.redis.aclose()
    assert response.status_code == 503
    assert errors(response) == {"redis": ["did not answer within 0.3 s"]}


async def test_startup_when_the_schema_is_at_head(
    app: FastAPI, client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    app.state.engine = engine
    response = await client.get(f"{HEALTH}/startup")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"migrations": head()}}


async def test_startup_fails_until_migrations_ran(
    app: FastAPI, client: httpx.AsyncClient, server_url: str
) -> None:
    name = "conduit_unmigrated"
    url = await recreate_database(server_url, name)
    engine = create_async_engine(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    app.state.engine = engine
    try:
        response = await client.get(f"{HEALTH}/startup")
        assert response.status_code == 503
        assert errors(response) == {"migrations": [f"are at none, not at {head()}"]}
        await migrations.upgrade(url)
        assert (await client.get(f"{HEALTH}/startup")).status_code == 200
    finally:
        await engine.dispose()
        await drop_database(server_url, name)


async def test_startup_fails_when_the_database_is_down(
    app: FastAPI, client: httpx.AsyncClient, dead_engine: AsyncEngine
) -> None:
    app.state.engine = dead_engine
    response = await client.get(f"{HEALTH}/startup")
    assert response.status_code == 503
    assert set(errors(response)) == {"migrations"}


async def test_probes_through_the_real_lifespan(settings: Settings) -> None:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport) as client:
            for probe in ("live", "ready", "startup"):
                response = await client.get(f"{HEALTH}/{probe}")
                assert response.status_code == 200, (probe, response.text)


async def test_probes_stay_out_of_the_api_schema(client: httpx.AsyncClient) -> None:
    paths = (await client.get("http://conduit.test/openapi.json")).json()["paths"]
    assert not [path for path in paths if path.startswith(("/health", "/metrics"))]

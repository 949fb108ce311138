import gc

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from sqlalchemy import text

from conduit.app import create_app
from conduit.platform.db.session import SessionDep
from conduit.platform.settings import Settings
from tests.helpers import errors

pytestmark = pytest.mark.anyio


async def test_unknown_route_is_404_in_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.get("/nothing-here")
    assert response.status_code == 404
    assert errors(response) == {"body": ["not found"]}


async def test_wrong_method_is_405_in_error_shape(client: httpx.AsyncClient) -> None:
    response = await client.patch("/tags")
    assert response.status_code == 405
    assert errors(response) == {"body": ["method not allowed"]}


async def test_trailing_slash_is_served_without_redirect(client: httpx.AsyncClient) -> None:
    response = await client.get("/tags/")
    assert response.status_code == 200
    assert response.json() == {"tags": []}


async def test_cors_preflight_from_local_front_end(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/articles",
        headers={
            "Origin": "http://localhost:4200",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert response.status_code == 200
    assert response.headers["access-control-allow-origin"] == "http://localhost:4200"
    assert "authorization" in response.headers["access-control-allow-headers"].lower()


async def test_cors_refuses_unknown_origin(client: httpx.AsyncClient) -> None:
    response = await client.get("/tags", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in response.headers


async def test_docs_and_schema_are_served(client: httpx.AsyncClient) -> None:
    schema = await client.get("http://conduit.test/openapi.json")
    assert schema.status_code == 200
    assert "/api/articles/{slug}" in schema.json()["paths"]
    docs = await client.get("http://conduit.test/docs")
    assert docs.status_code == 200


async def test_lifespan_serves_from_the_configured_database(settings: Settings) -> None:
    """The real request path: the lifespan's engine, sessions and commits, no test overrides."""
    app = create_app(settings.model_copy(update={"migrate_on_start": True}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            user = {
                "username": "lifespan_user",
                "email": "lifespan@example.com",
                "password": "p" * 8,
            }
            created = await client.post("/users", json={"user": user})
            assert created.status_code == 201
            try:
                login = await client.post("/users/login", json={"user": user})
                assert login.status_code == 200
            finally:
                async with app.state.engine.begin() as connection:
                    await connection.execute(
                        text("DELETE FROM user_account WHERE username = :name"),
                        {"name": "lifespan_user"},
                    )


async def test_value_rejected_by_the_database_is_422_not_500(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    """The safety net behind validation: PostgreSQL refusing a value is the client's error,
    while other database failures stay server errors."""

    @app.get("/api/test/rejected-value")
    async def rejected_value(session: SessionDep) -> None:
        await session.execute(text("SELECT CAST(:value AS text)"), {"value": "nul\x00"})

    @app.get("/api/test/unencodable-value")
    async def unencodable_value(session: SessionDep) -> None:
        await session.execute(text("SELECT CAST(:value AS bigint)"), {"value": 2**63})

    @app.get("/api/test/broken-query")
    async def broken_query(session: SessionDep) -> None:
        await session.execute(text("SELECT * FROM no_such_table"))

    rejected = await client.get("/test/rejected-value")
    assert rejected.status_code == 422
    assert errors(rejected) == {"body": ["contains a value that is not allowed"]}
    unencodable = await client.get("/test/unencodable-value")
    assert unencodable.status_code == 422
    broken = await client.get("/test/broken-query", headers={"Origin": "http://localhost:4200"})
    assert broken.status_code == 500
    assert errors(broken) == {"body": ["internal server error"]}
    # Rendered inside the CORS middleware, so a browser front end can read it.
    assert broken.headers["access-control-allow-origin"] == "http://localhost:4200"


async def test_a_statement_timeout_is_503_not_500(app: FastAPI, client: httpx.AsyncClient) -> None:
    """A valid request too costly for DB_STATEMENT_TIMEOUT_MS (a very deep offset on a large
    list) is the server's refusal, with a hint, not an internal error."""

    @app.get("/api/test/slow-query")
    async def slow_query(session: SessionDep) -> None:
        await session.execute(text("SET LOCAL statement_timeout = 50"))
        await session.execute(text("SELECT pg_sleep(2)"))

    response = await client.get("/test/slow-query")

    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert set(errors(response)) == {"database"}
    assert "cursor" in errors(response)["database"][0]


async def test_unpaired_surrogate_is_422(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users",
        content=b'{"user": {"username": "\\ud800", "email": "a@example.com", "password": "x"}}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert errors(response)["username"] == ["must be valid UTF-8 text"]


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", b"user[email]=a@example.com"),
        ("text/plain", b'{"user": {}}'),
        (None, b'{"user": {}}'),
    ],
)
async def test_body_that_is_not_json_is_415(
    client: httpx.AsyncClient, content_type: str | None, body: bytes
) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    response = await client.post("/users/login", content=body, headers=headers)
    assert response.status_code == 415
    assert errors(response) == {"Content-Type": ["must be application/json"]}


async def test_json_with_charset_is_accepted(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users/login",
        content=b'{"user": {"email": "nobody@example.com", "password": "whatever1"}}',
        headers={"Content-Type": "application/json; charset=utf-8"},
    )
    assert response.status_code == 401


@pytest.mark.parametrize("body", [b'{"user": {"email": "\xc0\x80"}}', b"\xff\xfe{}"])
async def test_body_that_is_not_utf8_is_422(client: httpx.AsyncClient, body: bytes) -> None:
    response = await client.post(
        "/users/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    [message] = errors(response)["body"]
    assert message.startswith("is not valid JSON")


async def test_what_start_up_built_stays_out_of_full_collections_while_serving(
    settings: Settings,
) -> None:
    async with LifespanManager(create_app(settings)):
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0

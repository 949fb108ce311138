"""What protects the service and its browser clients: the body size limit, security headers
and CORS settings."""

import base64
import hashlib
import re
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

from conduit.app import create_app
from conduit.platform.settings import Settings, SettingsError
from tests.helpers import errors

pytestmark = pytest.mark.anyio

LIMIT = 1024


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body_bytes": LIMIT})


def login_body(size: int) -> bytes:
    """A valid login of exactly `size` bytes, padded with JSON whitespace."""
    body = b'{"user": {"email": "someone@example.com", "password": "not-the-password"}}'
    return body + b" " * (size - len(body))


async def test_body_over_the_limit_is_413_before_it_is_read(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/users/login",
        content=login_body(LIMIT + 1),
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert errors(response) == {"body": [f"is too large (maximum is {LIMIT} bytes)"]}


async def test_streamed_body_over_the_limit_is_413(client: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        body = login_body(4 * LIMIT)
        for start in range(0, len(body), 256):
            yield body[start : start + 256]

    response = await client.post(
        "/users/login", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413
    assert errors(response) == {"body": [f"is too large (maximum is {LIMIT} bytes)"]}


async def test_body_at_the_limit_is_served(client: httpx.AsyncClient) -> None:
    body = login_body(LIMIT)
    assert len(body) == LIMIT
    response = await client.post(
        "/users/login", content=body, headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 401


async def test_api_responses_carry_the_security_headers(client: httpx.AsyncClient) -> None:
    for response in (
        await client.get("/tags"),
        await client.get("/nothing-here"),
        await client.post("/users/login", content=b"x", headers={"Content-Type": "text/plain"}),
        await client.get("http://conduit.test/openapi.json"),
    ):
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
        assert response.headers["Content-Security-Policy"] == (
            "default-src 'none'; frame-ancestors 'none'"
        )
        # Plain HTTP: a browser would ignore HSTS, and a development server must not set it.
        assert "Strict-Transport-Security" not in response.headers


async def test_hsts_only_over_tls(app: FastAPI) -> None:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://conduit.test") as client:
        response = await client.get("/api/tags")
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000"


@pytest.mark.parametrize("page", ["/docs", "/redoc", "/docs/oauth2-redirect"])
async def test_docs_pages_allow_exactly_their_own_inline_scripts(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(f"http://conduit.test{page}")
    assert response.status_code == 200
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["Content-Security-Policy"].split(";")
    )
    scripts = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    hashes = {
        f"'sha256-{base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()}'"
        for script in scripts
    }
    assert hashes <= set(policy["script-src"].split())
    assert "'unsafe-inline'" not in policy["script-src"]
    assert "'unsafe-eval'" not in policy["script-src"]
    assert policy["default-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_swagger_ui_assets_are_allowed_on_docs(client: httpx.AsyncClient) -> None:
    response = await client.get("http://conduit.test/docs")
    policy = response.headers["Content-Security-Policy"]
    for asset in re.findall(r'(?:src|href)="(https://[^/"]+)', response.text):
        assert asset in policy, asset


async def test_cors_preflight_carries_security_headers(client: httpx.AsyncClient) -> None:
    response = await client.options(
        "/articles",
        headers={"Origin": "http://localhost:4200", "Access-Control-Request-Method": "POST"},
    )
    assert response.status_code == 200
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_any_origin_with_credentials_is_refused(settings: Settings) -> None:
    with pytest.raises(SettingsError, match="CORS_ALLOW_CREDENTIALS"):
        Settings(_env_file=None, cors_origins="*", cors_allow_credentials=True)
    with pytest.raises(SettingsError, match="CORS_ALLOW_CREDENTIALS"):
        Settings(_env_file=None, cors_origin_regex=r"https://.*", cors_allow_credentials=True)


async def test_any_origin_without_credentials_gets_no_credentials(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"cors_origins": ["*"]}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/health/live", headers={"Origin": "https://elsewhere.example"})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "access-control-allow-credentials" not in response.headers


async def test_named_origin_with_credentials(settings: Settings) -> None:
    configured = settings.model_copy(
        update={
            "cors_origins": ["https://conduit.example"],
            "cors_origin_regex": None,
            "cors_allow_credentials": True,
        }
    )
    app = create_app(configured)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        allowed = await client.get("/health/live", headers={"Origin": "https://conduit.example"})
        other = await client.get("/health/live", headers={"Origin": "https://evil.example"})
    assert allowed.headers["access-control-allow-origin"] == "https://conduit.example"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in other.headers


async def test_front_ends_may_send_and_read_the_extension_headers(
    client: httpx.AsyncClient,
) -> None:
    preflight = await client.options(
        "/articles",
        headers={
            "Origin": "http://localhost:4200",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "idempotency-key,if-none-match",
        },
    )
    assert preflight.status_code == 200
    response = await client.get("/tags", headers={"Origin": "http://localhost:4200"})
    exposed = response.headers["access-control-expose-headers"].lower()
    for header in ("etag", "retry-after", "x-ratelimit-remaining", "x-request-id"):
        assert header in exposed

"""Rate limits from the outside, on the in-process backend and on a real Redis."""

import asyncio
import time
from ipaddress import ip_network
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from conduit.cli import app as cli
from conduit.platform.observability.metrics import RATE_LIMIT_REJECTIONS
from conduit.platform.security import read_access_token
from conduit.platform.settings import Settings
from tests.helpers import PASSWORD, Account, errors, register
from tests.platform.backends import BACKENDS, UNREACHABLE_REDIS_URL, on_backend, on_redis

pytestmark = pytest.mark.anyio

LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


@pytest.fixture(params=BACKENDS)
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    return on_backend(settings, request.param, request)


def limited(settings: Settings, **limits: Any) -> Settings:
    return settings.model_copy(update=limits)


def remaining(response: httpx.Response) -> int:
    return int(response.headers["x-ratelimit-remaining"])


async def login(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post("/users/login", json={"user": {"email": email, "password": password}})


def assert_too_many(response: httpx.Response, field: str = "requests") -> None:
    assert response.status_code == 429, response.text
    assert set(errors(response)) == {field}
    assert 1 <= int(response.headers["retry-after"]) <= 3600
    assert remaining(response) == 0


class TestAnonymous:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(settings, rate_limit_anonymous="3/minute")

    async def test_headers_count_down_then_429_in_the_realworld_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        rejections = RATE_LIMIT_REJECTIONS.labels("requests")._value.get()
        asked_at = time.time()
        responses = [await client.get("/tags") for _ in range(3)]
        assert [response.status_code for response in responses] == [200, 200, 200]
        assert [remaining(response) for response in responses] == [2, 1, 0]
        assert {response.headers["x-ratelimit-limit"] for response in responses} == {"3"}
        # The sliding window's counts roll over on the minute: a request just before one is told
        # of a reset a few milliseconds after it, which may have passed by the time it is read.
        reset = int(responses[0].headers["x-ratelimit-reset"])
        assert asked_at < reset <= time.time() + 61

        refused = await client.get("/tags")
        assert_too_many(refused)
        assert "retry in" in errors(refused)["requests"][0]
        assert RATE_LIMIT_REJECTIONS.labels("requests")._value.get() == rejections + 1

    async def test_errors_carry_the_headers_too(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/articles/no-such-article")
        assert response.status_code == 404
        assert all(header in response.headers for header in LIMIT_HEADERS)

    async def test_a_signed_in_caller_is_counted_apart(self, client: httpx.AsyncClient) -> None:
        account = await register(client)  # the first of the three anonymous requests
        assert (await client.get("/tags")).status_code == 200
        assert (await client.get("/tags")).status_code == 200
        assert (await client.get("/tags")).status_code == 429
        response = await client.get("/tags", headers=account.headers)
        assert response.status_code == 200
        assert response.headers["x-ratelimit-limit"] == "1000000"

    async def test_an_invalid_token_counts_as_anonymous(self, client: httpx.AsyncClient) -> None:
        for _ in range(3):
            await client.get("/tags")
        response = await client.get("/tags", headers={"Authorization": "Token forged"})
        assert response.status_code == 429


class TestTiers:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(
            settings,
            rate_limit_tiers={"free": "2/minute", "pro": "4/minute", "unlimited": None},
            rate_limit_default_tier="free",
        )

    async def users(self, client: httpx.AsyncClient, app: FastAPI) -> dict[str, Account]:
        accounts = {tier: await register(client) for tier in ("free", "pro", "unlimited")}
        for tier in ("pro", "unlimited"):
            claims = read_access_token(accounts[tier].token, secret=app.state.jwt_secret)
            app.state.limiter.user_tiers[claims.user_id] = tier
        return accounts

    async def test_each_user_gets_their_tiers_limit(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        accounts = await self.users(client, app)
        statuses = {
            tier: [
                (await client.get("/user", headers=account.headers)).status_code for _ in range(5)
            ]
            for tier, account in accounts.items()
        }
        assert statuses == {
            "free": [200, 200, 429, 429, 429],
            "pro": [200, 200, 200, 200, 429],
            "unlimited": [200] * 5,
        }

    async def test_the_unlimited_tier_has_no_headers(
        self, client: httpx.AsyncClient, app: FastAPI
    ) -> None:
        accounts = await self.users(client, app)
        response = await client.get("/user", headers=accounts["unlimited"].headers)
        assert not any(header in response.headers for header in LIMIT_HEADERS)

    async def test_users_do_not_share_a_limit(self, client: httpx.AsyncClient) -> None:
        first, second = await register(client), await register(client)
        for _ in range(2):
            await client.get("/user", headers=first.headers)
        assert (await client.get("/user", headers=first.headers)).status_code == 429
        assert (await client.get("/user", headers=second.headers)).status_code == 200


def test_tiers_come_from_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RATE_LIMIT_TIERS", '{"free": "10/minute", "gold": "100/minute"}')
    monkeypatch.setenv("RATE_LIMIT_USER_TIERS", '{"7": "gold"}')
    configured = Settings(_env_file=None)
    assert configured.rate_limit_tiers == {"free": "10/minute", "gold": "100/minute"}
    assert configured.rate_limit_user_tiers == {7: "gold"}


class TestWrites:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(settings, rate_limit_writes="2/minute")

    async def test_writes_have_their_own_stricter_limit(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        article = {"title": "t", "description": "d", "body": "b"}
        statuses = [
            (
                await client.post("/articles", json={"article": article}, headers=account.headers)
            ).status_code
            for _ in range(3)
        ]
        assert statuses == [201, 201, 429]
        assert (await client.get("/articles", headers=account.headers)).status_code == 200


class TestCostlyRoutes:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(settings, rate_limit_register="2/minute", rate_limit_login="2/minute")

    async def test_registration_is_limited_per_ip(self, client: httpx.AsyncClient) -> None:
        await register(client)
        await register(client)
        user = {"username": "third", "email": "third@example.com", "password": PASSWORD}
        assert_too_many(await client.post("/users", json={"user": user}))

    async def test_login_is_limited_per_ip(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        for _ in range(2):
            assert (await login(client, account.email, PASSWORD)).status_code == 200
        assert_too_many(await login(client, account.email, PASSWORD))


class TestLoginBruteForce:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(
            settings,
            rate_limit_login_failures_per_account="3/15minutes",
            rate_limit_login_failures_per_ip="5/15minutes",
        )

    async def test_an_account_locks_after_failures_even_for_the_right_password(
        self, client: httpx.AsyncClient
    ) -> None:
        account, bystander = await register(client), await register(client)
        for _ in range(3):
            assert (await login(client, account.email, "wrong password")).status_code == 401
        locked = await login(client, account.email, PASSWORD)
        assert_too_many(locked, field="login attempts")
        assert 890 <= int(locked.headers["retry-after"]) <= 900
        assert locked.headers["x-ratelimit-limit"] == "3"
        assert (await login(client, bystander.email, PASSWORD)).status_code == 200

    async def test_an_ip_locks_after_failures_across_accounts(
        self, client: httpx.AsyncClient
    ) -> None:
        accounts = [await register(client) for _ in range(3)]
        for account in [*accounts, *accounts][:5]:
            assert (await login(client, account.email, "wrong password")).status_code == 401
        assert_too_many(await login(client, accounts[2].email, PASSWORD), field="login attempts")

    async def test_unknown_accounts_count_too(self, client: httpx.AsyncClient) -> None:
        for _ in range(3):
            assert (await login(client, "nobody@example.com", PASSWORD)).status_code == 401
        assert (await login(client, "NOBODY@example.com", PASSWORD)).status_code == 429

    async def test_a_success_forgives_the_accounts_failures(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for _ in range(2):
            await login(client, account.email, "wrong password")
        assert (await login(client, account.email, PASSWORD)).status_code == 200
        for _ in range(2):
            assert (await login(client, account.email, "wrong password")).status_code == 401
        assert (await login(client, account.email, PASSWORD)).status_code == 200


class TestLockoutEnds:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(settings, rate_limit_login_failures_per_account="2/2seconds")

    async def test_attempts_are_allowed_again_once_the_window_has_passed(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        for _ in range(2):
            await login(client, account.email, "wrong password")
        assert (await login(client, account.email, PASSWORD)).status_code == 429
        await asyncio.sleep(2.1)
        assert (await login(client, account.email, PASSWORD)).status_code == 200


class TestClientAddress:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(settings, rate_limit_anonymous="1/minute")

    async def test_forwarded_for_is_ignored_from_an_untrusted_peer(
        self, client: httpx.AsyncClient
    ) -> None:
        first = await client.get("/tags", headers={"X-Forwarded-For": "203.0.113.1"})
        second = await client.get("/tags", headers={"X-Forwarded-For": "203.0.113.2"})
        assert (first.status_code, second.status_code) == (200, 429)


class TestTrustedProxy:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        # httpx's in-process transport reports the peer as 127.0.0.1.
        return limited(
            settings, rate_limit_anonymous="1/minute", trusted_proxies=[ip_network("127.0.0.0/8")]
        )

    async def test_forwarded_for_names_the_client_behind_a_trusted_proxy(
        self, client: httpx.AsyncClient
    ) -> None:
        def via(chain: str) -> dict[str, str]:
            return {"X-Forwarded-For": chain}

        assert (await client.get("/tags", headers=via("203.0.113.1"))).status_code == 200
        assert (await client.get("/tags", headers=via("203.0.113.2"))).status_code == 200
        # A client cannot pick its address by prepending one: the nearest untrusted hop counts.
        spoofed = via("198.51.100.7, 203.0.113.1")
        assert (await client.get("/tags", headers=spoofed)).status_code == 429
        # IPv6 clients count per /64.
        assert (await client.get("/tags", headers=via("2001:db8::1"))).status_code == 200
        assert (await client.get("/tags", headers=via("2001:db8::2"))).status_code == 429


class TestRedisUnreachable:
    async def test_fail_open_lets_requests_through_without_headers(
        self, client: httpx.AsyncClient, app: FastAPI, settings: Settings
    ) -> None:
        response = await client.get("/tags")
        assert response.status_code == 200
        assert not any(header in response.headers for header in LIMIT_HEADERS)

    @pytest.fixture
    def settings(self, settings: Settings, request: pytest.FixtureRequest) -> Settings:
        fail_open = request.node.name.startswith("test_fail_open")
        return on_redis(
            settings,
            UNREACHABLE_REDIS_URL,
            rate_limit_anonymous="1/minute",
            rate_limit_fail_open=fail_open,
        )

    async def test_fail_closed_refuses_with_503(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/tags")
        assert response.status_code == 503
        assert set(errors(response)) == {"rate limit"}
        assert int(response.headers["retry-after"]) >= 1


class TestDisabled:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return limited(settings, rate_limit_enabled=False, rate_limit_anonymous="1/minute")

    async def test_nothing_is_limited_and_no_headers_are_sent(
        self, client: httpx.AsyncClient
    ) -> None:
        for _ in range(3):
            response = await client.get("/tags")
            assert response.status_code == 200
            assert "x-ratelimit-limit" not in response.headers


def test_several_workers_need_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("DATABASE_URL", "postgresql://unused@127.0.0.1:1/unused")
    from conduit.platform.settings import get_settings

    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["serve", "--workers", "2"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 2
    assert "REDIS_URL" in result.output

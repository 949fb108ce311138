import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import jwt
import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.users.models import RefreshToken
from tests.conftest import TEST_JWT_SECRET
from tests.helpers import Account, errors, register

pytestmark = pytest.mark.anyio

NEW_PASSWORD = "a brand new password"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


async def login(client: httpx.AsyncClient, account: Account, password: str | None = None) -> Any:
    response = await client.post(
        "/users/login",
        json={"user": {"email": account.email, "password": password or account.password}},
    )
    assert response.status_code == 200, response.text
    return response.json()["user"]


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/users/refresh", json={"user": {"refreshToken": refresh_token}})


async def logout(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/users/logout", json={"user": {"refreshToken": refresh_token}})


async def rotate(client: httpx.AsyncClient, refresh_token: str) -> Any:
    response = await refresh(client, refresh_token)
    assert response.status_code == 200, response.text
    return response.json()["user"]


class TestSignIn:
    async def test_register_and_login_return_an_opaque_refresh_token(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        signed_in = await login(client, account)
        for refresh_token in (account.refresh_token, signed_in["refreshToken"]):
            assert len(refresh_token) >= 43
            assert "." not in refresh_token  # not a JWT: it means nothing without the database
        assert signed_in["refreshToken"] != account.refresh_token
        assert signed_in["username"] == account.username

    async def test_refresh_tokens_are_stored_only_as_hashes(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        account = await register(client)
        stored = set(await session.scalars(select(RefreshToken.token_hash)))
        assert hashlib.sha256(account.refresh_token.encode()).digest() in stored
        assert account.refresh_token.encode() not in stored

    async def test_current_user_is_the_plain_realworld_shape(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        response = await client.get("/user", headers=account.headers)
        assert set(response.json()["user"]) == {"email", "token", "username", "bio", "image"}


class TestRefresh:
    async def test_returns_a_new_working_pair(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        user = await rotate(client, account.refresh_token)
        assert user["username"] == account.username
        assert user["email"] == account.email
        assert user["refreshToken"] != account.refresh_token
        me = await client.get("/user", headers=bearer(user["token"]))
        assert me.status_code == 200
        assert me.json()["user"]["username"] == account.username
        assert (await refresh(client, user["refreshToken"])).status_code == 200

    async def test_the_old_token_stops_working(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        await rotate(client, account.refresh_token)
        response = await refresh(client, account.refresh_token)
        assert response.status_code == 401
        assert errors(response) == {
            "refreshToken": ["has already been used; its session has been ended"]
        }

    async def test_reuse_revokes_the_whole_family(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        first = await rotate(client, account.refresh_token)
        second = await rotate(client, first["refreshToken"])
        # Someone replays a token that was already exchanged: nobody can tell thief from owner.
        assert (await refresh(client, first["refreshToken"])).status_code == 401
        response = await refresh(client, second["refreshToken"])
        assert response.status_code == 401
        assert errors(response) == {"refreshToken": ["has been revoked"]}

    async def test_reuse_leaves_other_sign_ins_alone(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        elsewhere = await login(client, account)
        await rotate(client, account.refresh_token)
        assert (await refresh(client, account.refresh_token)).status_code == 401
        assert (await refresh(client, elsewhere["refreshToken"])).status_code == 200

    async def test_access_tokens_are_not_refresh_tokens(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await refresh(client, account.token)
        assert response.status_code == 401
        assert errors(response) == {"refreshToken": ["is invalid"]}

    async def test_unknown_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await refresh(client, "not-a-token-anyone-was-given")
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Token"
        assert errors(response) == {"refreshToken": ["is invalid"]}

    async def test_expired_token_is_401(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        account = await register(client)
        digest = hashlib.sha256(account.refresh_token.encode()).digest()
        await session.execute(
            update(RefreshToken)
            .where(RefreshToken.token_hash == digest)
            .values(expires_at=datetime.now(UTC) - timedelta(seconds=1))
        )
        response = await refresh(client, account.refresh_token)
        assert response.status_code == 401
        assert errors(response) == {"refreshToken": ["has expired"]}

    async def test_lifetime_follows_the_setting(
        self, client: httpx.AsyncClient, session: AsyncSession
    ) -> None:
        account = await register(client)
        digest = hashlib.sha256(account.refresh_token.encode()).digest()
        expires_at = await session.scalar(
            select(RefreshToken.expires_at).where(RefreshToken.token_hash == digest)
        )
        assert expires_at is not None
        lifetime = expires_at - datetime.now(UTC)
        assert timedelta(days=29, hours=23) < lifetime <= timedelta(days=30)

    @pytest.mark.parametrize(
        ("body", "field", "message"),
        [
            ({"user": {}}, "refreshToken", "can't be blank"),
            ({"user": {"refreshToken": ""}}, "refreshToken", "can't be blank"),
            ({"user": {"refreshToken": 42}}, "refreshToken", "must be a string"),
            (
                {"user": {"refreshToken": "x" * 257}},
                "refreshToken",
                "is too long (maximum is 256 characters)",
            ),
            ({"refreshToken": "abc"}, "user", "can't be blank"),
        ],
    )
    @pytest.mark.parametrize("path", ["/users/refresh", "/users/logout"])
    async def test_malformed_body_is_422(
        self, client: httpx.AsyncClient, path: str, body: object, field: str, message: str
    ) -> None:
        response = await client.post(path, json=body)
        assert response.status_code == 422
        assert errors(response) == {field: [message]}


class TestLogout:
    async def test_ends_the_session(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await logout(client, account.refresh_token)
        assert response.status_code == 204
        assert response.content == b""
        again = await refresh(client, account.refresh_token)
        assert again.status_code == 401
        assert errors(again) == {"refreshToken": ["has been revoked"]}

    async def test_ends_every_token_of_the_family(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        rotated = await rotate(client, account.refresh_token)
        assert (await logout(client, account.refresh_token)).status_code == 204
        assert (await refresh(client, rotated["refreshToken"])).status_code == 401

    async def test_leaves_other_sign_ins_alone(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        elsewhere = await login(client, account)
        await logout(client, account.refresh_token)
        assert (await refresh(client, elsewhere["refreshToken"])).status_code == 200

    async def test_twice_is_harmless(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        assert (await logout(client, account.refresh_token)).status_code == 204
        assert (await logout(client, account.refresh_token)).status_code == 204

    async def test_unknown_token_is_401(self, client: httpx.AsyncClient) -> None:
        response = await logout(client, "not-a-token-anyone-was-given")
        assert response.status_code == 401
        assert errors(response) == {"refreshToken": ["is invalid"]}


class TestPasswordChange:
    async def test_ends_every_session_and_hands_this_client_new_tokens(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        elsewhere = await login(client, account)
        response = await client.put(
            "/user", json={"user": {"password": NEW_PASSWORD}}, headers=account.headers
        )
        assert response.status_code == 200
        user = response.json()["user"]
        assert user["token"] != account.token

        for old_access in (account.token, elsewhere["token"]):
            me = await client.get("/user", headers=bearer(old_access))
            assert me.status_code == 401
            assert errors(me) == {"token": ["has been revoked"]}
        for old_refresh in (account.refresh_token, elsewhere["refreshToken"]):
            assert (await refresh(client, old_refresh)).status_code == 401

        assert (await client.get("/user", headers=bearer(user["token"]))).status_code == 200
        assert (await refresh(client, user["refreshToken"])).status_code == 200

    async def test_the_new_password_signs_in(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        await client.put(
            "/user", json={"user": {"password": NEW_PASSWORD}}, headers=account.headers
        )
        signed_in = await login(client, account, NEW_PASSWORD)
        assert (await client.get("/user", headers=bearer(signed_in["token"]))).status_code == 200

    async def test_other_changes_keep_every_session(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.put(
            "/user", json={"user": {"bio": "still me", "password": ""}}, headers=account.headers
        )
        assert response.status_code == 200
        assert response.json()["user"]["token"] == account.token
        assert "refreshToken" not in response.json()["user"]
        assert (await client.get("/user", headers=account.headers)).status_code == 200
        assert (await refresh(client, account.refresh_token)).status_code == 200

    async def test_a_failed_change_keeps_every_session(self, client: httpx.AsyncClient) -> None:
        first = await register(client)
        second = await register(client)
        response = await client.put(
            "/user",
            json={"user": {"password": NEW_PASSWORD, "username": first.username}},
            headers=second.headers,
        )
        assert response.status_code == 422
        assert (await client.get("/user", headers=second.headers)).status_code == 200
        assert (await refresh(client, second.refresh_token)).status_code == 200


class TestAccessTokenVersion:
    def claims(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = jwt.decode(token, options={"verify_signature": False})
        return result

    async def test_access_tokens_carry_the_version(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        assert self.claims(account.token)["ver"] == 0

    @pytest.mark.parametrize("version", [1, -1, "0", 0.0, True, None, 2**31])
    async def test_another_version_is_401(self, client: httpx.AsyncClient, version: object) -> None:
        account = await register(client)
        forged = jwt.encode(
            {**self.claims(account.token), "ver": version}, TEST_JWT_SECRET, "HS256"
        )
        response = await client.get("/user", headers=bearer(forged))
        assert response.status_code == 401

    async def test_tokens_from_before_versions_are_version_zero(
        self, client: httpx.AsyncClient
    ) -> None:
        account = await register(client)
        claims = self.claims(account.token)
        del claims["ver"]
        legacy = jwt.encode(claims, TEST_JWT_SECRET, "HS256")
        assert (await client.get("/user", headers=bearer(legacy))).status_code == 200
        await client.put(
            "/user", json={"user": {"password": NEW_PASSWORD}}, headers=account.headers
        )
        assert (await client.get("/user", headers=bearer(legacy))).status_code == 401

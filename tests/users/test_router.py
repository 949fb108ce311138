import httpx
import pytest

from tests.helpers import PASSWORD, Account, errors, register, unique_name

pytestmark = pytest.mark.anyio


class TestRegister:
    async def test_returns_user_with_token(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/users",
            json={"user": {"username": "jake", "email": "jake@jake.jake", "password": "jakejake1"}},
        )
        assert response.status_code == 201
        user = response.json()["user"]
        assert user["username"] == "jake"
        assert user["email"] == "jake@jake.jake"
        assert user["bio"] == ""
        assert user["image"] == ""
        assert user["token"]

    async def test_token_works_for_current_user(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.get("/user", headers=account.headers)
        assert response.status_code == 200
        assert response.json()["user"]["username"] == account.username

    @pytest.mark.parametrize("field", ["username", "email"])
    async def test_duplicate_is_422_case_insensitively(
        self, client: httpx.AsyncClient, field: str
    ) -> None:
        account = await register(client)
        new = {
            "username": unique_name(),
            "email": f"{unique_name()}@example.com",
            "password": PASSWORD,
        }
        new[field] = getattr(account, field).upper()
        response = await client.post("/users", json={"user": new})
        assert response.status_code == 422
        assert errors(response) == {field: ["has already been taken"]}

    @pytest.mark.parametrize(
        ("user", "field", "message"),
        [
            ({"email": "a@example.com", "password": PASSWORD}, "username", "can't be blank"),
            ({"username": "a", "password": PASSWORD}, "email", "can't be blank"),
            ({"username": "a", "email": "a@example.com"}, "password", "can't be blank"),
            (
                {"username": "", "email": "a@example.com", "password": PASSWORD},
                "username",
                "can't be blank",
            ),
            (
                {"username": "   ", "email": "a@example.com", "password": PASSWORD},
                "username",
                "can't be blank",
            ),
            (
                {"username": 42, "email": "a@example.com", "password": PASSWORD},
                "username",
                "must be a string",
            ),
            (
                {"username": "a", "email": "not-an-email", "password": PASSWORD},
                "email",
                "is invalid",
            ),
            (
                {"username": "a", "email": "a@example.com", "password": "short"},
                "password",
                "is too short (minimum is 8 characters)",
            ),
            (
                {"username": "a" * 65, "email": "a@example.com", "password": PASSWORD},
                "username",
                "is too long (maximum is 64 characters)",
            ),
            (
                {"username": "a/b", "email": "a@example.com", "password": PASSWORD},
                "username",
                "is invalid",
            ),
            (
                {"username": "a\u0000b", "email": "a@example.com", "password": PASSWORD},
                "username",
                "is invalid",
            ),
            (
                {"username": "a", "email": "a@example.com", "password": "passw\u0000rd"},
                "password",
                "must not contain NUL characters",
            ),
        ],
    )
    async def test_invalid_input_is_422(
        self, client: httpx.AsyncClient, user: dict[str, object], field: str, message: str
    ) -> None:
        response = await client.post("/users", json={"user": user})
        assert response.status_code == 422
        assert message in errors(response)[field]

    @pytest.mark.parametrize("body", [{}, {"user": None}, {"user": "jake"}, [], "null"])
    async def test_wrong_envelope_is_422(self, client: httpx.AsyncClient, body: object) -> None:
        response = await client.post("/users", json=body)
        assert response.status_code == 422
        assert errors(response)

    async def test_malformed_json_is_422(self, client: httpx.AsyncClient) -> None:
        response = await client.post(
            "/users", content=b'{"user": {', headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 422
        assert "body" in errors(response)


class TestLogin:
    async def test_returns_user_with_token(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": account.password}}
        )
        assert response.status_code == 200
        user = response.json()["user"]
        assert user["username"] == account.username
        me = await client.get("/user", headers={"Authorization": f"Token {user['token']}"})
        assert me.status_code == 200

    async def test_email_is_case_insensitive(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.post(
            "/users/login",
            json={"user": {"email": account.email.upper(), "password": account.password}},
        )
        assert response.status_code == 200

    async def test_wrong_password_is_401(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": "wrong password"}}
        )
        assert response.status_code == 401
        assert errors(response) == {"email or password": ["is invalid"]}

    async def test_unknown_email_is_401_like_a_wrong_password(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.post(
            "/users/login", json={"user": {"email": "nobody@example.com", "password": PASSWORD}}
        )
        assert response.status_code == 401
        assert errors(response) == {"email or password": ["is invalid"]}

    @pytest.mark.parametrize(
        ("user", "field"),
        [
            ({"password": PASSWORD}, "email"),
            ({"email": "a@example.com"}, "password"),
            ({"email": "", "password": PASSWORD}, "email"),
        ],
    )
    async def test_missing_fields_are_422(
        self, client: httpx.AsyncClient, user: dict[str, str], field: str
    ) -> None:
        response = await client.post("/users/login", json={"user": user})
        assert response.status_code == 422
        assert errors(response)[field] == ["can't be blank"]


class TestCurrentUser:
    async def test_accepts_bearer_scheme(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.get("/user", headers={"Authorization": f"Bearer {account.token}"})
        assert response.status_code == 200
        assert response.json()["user"]["token"] == account.token

    @pytest.mark.parametrize(
        "header",
        [
            None,
            "",
            "Token",
            "Token ",
            "Basic abc",
            "Token not.a.jwt",
            "Token a b",
            "Token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
        ],
    )
    async def test_missing_or_malformed_token_is_401(
        self, client: httpx.AsyncClient, header: str | None
    ) -> None:
        headers = {} if header is None else {"Authorization": header}
        response = await client.get("/user", headers=headers)
        assert response.status_code == 401
        assert errors(response)

    async def test_forged_token_is_401(self, client: httpx.AsyncClient) -> None:
        import jwt

        account = await register(client)
        claims = jwt.decode(account.token, options={"verify_signature": False})
        forged = jwt.encode(claims, "another-secret-of-sufficient-length-0123456789", "HS256")
        response = await client.get("/user", headers={"Authorization": f"Token {forged}"})
        assert response.status_code == 401

    async def test_expired_token_is_401(self, client: httpx.AsyncClient) -> None:
        from datetime import UTC, datetime, timedelta

        import jwt

        from tests.conftest import TEST_JWT_SECRET

        account = await register(client)
        claims = jwt.decode(account.token, options={"verify_signature": False})
        past = datetime.now(UTC) - timedelta(days=2)
        claims.update(iat=past, exp=past + timedelta(hours=1))
        expired = jwt.encode(claims, TEST_JWT_SECRET, "HS256")
        response = await client.get("/user", headers={"Authorization": f"Token {expired}"})
        assert response.status_code == 401
        assert errors(response) == {"token": ["has expired"]}

    async def test_token_accepted_before_it_expires_is_401_after(
        self, client: httpx.AsyncClient
    ) -> None:
        # The claims of a verified token are remembered, but not past the token's expiry.
        import asyncio
        import math
        import time

        import jwt

        from tests.conftest import TEST_JWT_SECRET

        account = await register(client)
        claims = jwt.decode(account.token, options={"verify_signature": False})
        claims["exp"] = expires_at = math.ceil(time.time()) + 1
        headers = {"Authorization": f"Token {jwt.encode(claims, TEST_JWT_SECRET, 'HS256')}"}
        assert (await client.get("/user", headers=headers)).status_code == 200
        await asyncio.sleep(expires_at - time.time() + 0.05)
        response = await client.get("/user", headers=headers)
        assert response.status_code == 401
        assert errors(response) == {"token": ["has expired"]}

    @pytest.mark.parametrize(
        "subject", ["²", "\u0661", "01", "0", "-1", "9223372036854775808", "9" * 5000, "1.0", " 1"]
    )
    async def test_token_with_a_malformed_subject_is_401(
        self, client: httpx.AsyncClient, subject: str
    ) -> None:
        import jwt

        from tests.conftest import TEST_JWT_SECRET

        account = await register(client)
        claims = jwt.decode(account.token, options={"verify_signature": False})
        claims["sub"] = subject
        token = jwt.encode(claims, TEST_JWT_SECRET, "HS256")
        response = await client.get("/user", headers={"Authorization": f"Token {token}"})
        assert response.status_code == 401
        assert errors(response) == {"token": ["is invalid"]}

    async def test_token_of_deleted_account_is_401(self, client: httpx.AsyncClient) -> None:
        import jwt

        from tests.conftest import TEST_JWT_SECRET

        account = await register(client)
        claims = jwt.decode(account.token, options={"verify_signature": False})
        claims["sub"] = "999999999"
        ghost = jwt.encode(claims, TEST_JWT_SECRET, "HS256")
        response = await client.get("/user", headers={"Authorization": f"Token {ghost}"})
        assert response.status_code == 401


class TestUpdateUser:
    async def test_changes_profile_fields(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.put(
            "/user",
            json={"user": {"bio": "I like to skateboard", "image": "https://i.example.com/j.png"}},
            headers=account.headers,
        )
        assert response.status_code == 200
        user = response.json()["user"]
        assert user["bio"] == "I like to skateboard"
        assert user["image"] == "https://i.example.com/j.png"
        assert user["username"] == account.username

    async def test_changes_email_and_username(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.put(
            "/user",
            json={"user": {"email": "new@example.com", "username": "renamed"}},
            headers=account.headers,
        )
        assert response.status_code == 200
        assert response.json()["user"]["email"] == "new@example.com"
        # The token is bound to the account, not to the name: it still works.
        me = await client.get("/user", headers=account.headers)
        assert me.json()["user"]["username"] == "renamed"
        login = await client.post(
            "/users/login",
            json={"user": {"email": "new@example.com", "password": account.password}},
        )
        assert login.status_code == 200

    async def test_changes_password(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.put(
            "/user", json={"user": {"password": "a brand new password"}}, headers=account.headers
        )
        assert response.status_code == 200
        old = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": account.password}}
        )
        assert old.status_code == 401
        new = await client.post(
            "/users/login",
            json={"user": {"email": account.email, "password": "a brand new password"}},
        )
        assert new.status_code == 200

    async def test_null_and_empty_password_mean_unchanged(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.put(
            "/user",
            json={"user": {"password": "", "email": None, "username": None, "bio": "hi"}},
            headers=account.headers,
        )
        assert response.status_code == 200
        assert response.json()["user"]["email"] == account.email
        login = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": account.password}}
        )
        assert login.status_code == 200

    async def test_null_bio_and_image_clear_them(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        await client.put(
            "/user",
            json={"user": {"bio": "x", "image": "https://i.example.com/x.png"}},
            headers=account.headers,
        )
        response = await client.put(
            "/user", json={"user": {"bio": None, "image": None}}, headers=account.headers
        )
        assert response.json()["user"]["bio"] == ""
        assert response.json()["user"]["image"] == ""

    async def test_taking_another_users_name_is_422(self, client: httpx.AsyncClient) -> None:
        first = await register(client)
        second = await register(client)
        response = await client.put(
            "/user",
            json={"user": {"username": first.username.upper(), "email": first.email}},
            headers=second.headers,
        )
        assert response.status_code == 422
        assert errors(response) == {
            "email": ["has already been taken"],
            "username": ["has already been taken"],
        }

    async def test_keeping_own_name_is_fine(self, client: httpx.AsyncClient) -> None:
        account = await register(client)
        response = await client.put(
            "/user",
            json={"user": {"username": account.username, "email": account.email}},
            headers=account.headers,
        )
        assert response.status_code == 200

    @pytest.mark.parametrize(
        ("user", "field"),
        [
            ({"email": "bad"}, "email"),
            ({"username": ""}, "username"),
            ({"password": "short"}, "password"),
            ({"bio": "x" * 2001}, "bio"),
            ({"image": 5}, "image"),
        ],
    )
    async def test_invalid_values_are_422(
        self, client: httpx.AsyncClient, user: dict[str, object], field: str
    ) -> None:
        account = await register(client)
        response = await client.put("/user", json={"user": user}, headers=account.headers)
        assert response.status_code == 422
        assert field in errors(response)

    async def test_requires_auth(self, client: httpx.AsyncClient) -> None:
        response = await client.put("/user", json={"user": {"bio": "x"}})
        assert response.status_code == 401


async def test_account_helper_headers() -> None:
    account = Account("a", "a@example.com", PASSWORD, "t")
    assert account.headers == {"Authorization": "Token t"}

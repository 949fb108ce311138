from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.users import service as users_service
from tests.helpers import Account, create_article, errors, register

pytestmark = pytest.mark.anyio

ADMIN_ROUTES = [
    ("GET", "/admin/users"),
    ("GET", "/admin/users/{username}"),
    ("PUT", "/admin/users/{username}/role"),
    ("POST", "/admin/users/{username}/suspension"),
    ("DELETE", "/admin/users/{username}/suspension"),
]


@pytest.fixture
async def admin(client: httpx.AsyncClient, session: AsyncSession) -> Account:
    """An admin made the way `conduit users create-admin` makes one."""
    account = await register(client)
    await users_service.ensure_admin(session, email=account.email, new_user=None)
    # Only a savepoint here (see conftest), so that a later failing request keeps the admin.
    await session.commit()
    return account


@pytest.fixture
async def moderator(client: httpx.AsyncClient, admin: Account) -> Account:
    account = await register(client)
    await set_role(client, admin, account, "moderator")
    return account


async def set_role(
    client: httpx.AsyncClient, admin: Account, account: Account, role: str
) -> httpx.Response:
    response = await client.put(
        f"/admin/users/{account.username}/role", json={"role": role}, headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return response


async def suspend(client: httpx.AsyncClient, admin: Account, account: Account) -> Any:
    response = await client.post(
        f"/admin/users/{account.username}/suspension", headers=admin.headers
    )
    assert response.status_code == 200, response.text
    return response.json()["user"]


async def call(
    client: httpx.AsyncClient, method: str, path: str, target: str, headers: dict[str, str]
) -> httpx.Response:
    body = {"role": "moderator"} if path.endswith("/role") else None
    return await client.request(method, path.format(username=target), json=body, headers=headers)


async def sign_in(client: httpx.AsyncClient, account: Account) -> httpx.Response:
    return await client.post(
        "/users/login", json={"user": {"email": account.email, "password": account.password}}
    )


class TestGuard:
    async def test_every_admin_route_is_covered_here(self, app: FastAPI) -> None:
        routes = {
            (method.upper(), path.removeprefix("/api"))
            for path, operations in app.openapi()["paths"].items()
            if path.startswith("/api/admin")
            for method in operations
        }
        assert routes == set(ADMIN_ROUTES)

    @pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
    async def test_anonymous_is_401(
        self, client: httpx.AsyncClient, method: str, path: str
    ) -> None:
        target = await register(client)
        response = await call(client, method, path, target.username, {})
        assert response.status_code == 401

    @pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
    @pytest.mark.parametrize("role", ["user", "moderator"])
    async def test_users_and_moderators_are_403(
        self, client: httpx.AsyncClient, admin: Account, method: str, path: str, role: str
    ) -> None:
        caller = await register(client)
        if role != "user":
            await set_role(client, admin, caller, role)
        target = await register(client)
        response = await call(client, method, path, target.username, caller.headers)
        assert response.status_code == 403
        assert errors(response) == {"user": ["requires the admin role"]}
        unchanged = await client.get(f"/admin/users/{target.username}", headers=admin.headers)
        assert unchanged.json()["user"]["role"] == "user"
        assert unchanged.json()["user"]["suspended"] is False

    @pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
    async def test_admins_are_let_in(
        self, client: httpx.AsyncClient, admin: Account, method: str, path: str
    ) -> None:
        target = await register(client)
        response = await call(client, method, path, target.username, admin.headers)
        assert response.status_code == 200

    async def test_non_admins_cannot_probe_which_accounts_exist(
        self, client: httpx.AsyncClient
    ) -> None:
        caller = await register(client)
        response = await client.get("/admin/users/nobody-here", headers=caller.headers)
        assert response.status_code == 403

    async def test_a_demoted_admin_loses_access_at_once(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        other_admin = await register(client)
        await set_role(client, admin, other_admin, "admin")
        assert (await client.get("/admin/users", headers=other_admin.headers)).status_code == 200
        await set_role(client, admin, other_admin, "user")
        assert (await client.get("/admin/users", headers=other_admin.headers)).status_code == 403

    async def test_documented_in_the_openapi_schema(self, app: FastAPI) -> None:
        paths = app.openapi()["paths"]
        for method, path in ADMIN_ROUTES:
            operation = paths[f"/api{path}"][method.lower()]
            assert operation["tags"] == ["Admin"]
            assert operation["security"] == [{"Token": []}]
            assert {"401", "403"} <= set(operation["responses"])


class TestListUsers:
    async def test_pages_newest_first_with_the_total(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        accounts = [await register(client) for _ in range(3)]
        response = await client.get("/admin/users", params={"limit": 2}, headers=admin.headers)
        assert response.status_code == 200
        body = response.json()
        assert body["usersCount"] == 4
        assert [user["username"] for user in body["users"]] == [
            accounts[2].username,
            accounts[1].username,
        ]
        rest = await client.get(
            "/admin/users", params={"limit": 2, "offset": 2}, headers=admin.headers
        )
        assert [user["username"] for user in rest.json()["users"]] == [
            accounts[0].username,
            admin.username,
        ]

    async def test_shows_what_admins_need(self, client: httpx.AsyncClient, admin: Account) -> None:
        response = await client.get("/admin/users", headers=admin.headers)
        (user,) = response.json()["users"]
        assert set(user) == {
            "id",
            "username",
            "email",
            "bio",
            "image",
            "role",
            "suspended",
            "suspendedAt",
            "createdAt",
        }
        assert user["email"] == admin.email
        assert user["role"] == "admin"
        assert user["suspended"] is False
        assert user["suspendedAt"] is None
        assert "password" not in str(user).lower()

    async def test_filters_by_role_and_suspension(
        self, client: httpx.AsyncClient, admin: Account, moderator: Account
    ) -> None:
        suspended = await register(client)
        await suspend(client, admin, suspended)

        async def usernames(**params: str) -> list[str]:
            response = await client.get("/admin/users", params=params, headers=admin.headers)
            assert response.status_code == 200
            return [user["username"] for user in response.json()["users"]]

        assert await usernames(role="moderator") == [moderator.username]
        assert await usernames(role="admin") == [admin.username]
        assert await usernames(suspended="true") == [suspended.username]
        assert suspended.username not in await usernames(suspended="false")

    @pytest.mark.parametrize(
        ("params", "field"),
        [
            ({"limit": 0}, "limit"),
            ({"limit": 101}, "limit"),
            ({"offset": -1}, "offset"),
            ({"role": "owner"}, "role"),
            ({"suspended": "perhaps"}, "suspended"),
        ],
    )
    async def test_bad_parameters_are_422(
        self, client: httpx.AsyncClient, admin: Account, params: dict[str, object], field: str
    ) -> None:
        response = await client.get("/admin/users", params=params, headers=admin.headers)
        assert response.status_code == 422
        assert field in errors(response)


class TestGetUser:
    async def test_finds_by_username_ignoring_case(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        account = await register(client)
        response = await client.get(
            f"/admin/users/{account.username.upper()}", headers=admin.headers
        )
        assert response.status_code == 200
        assert response.json()["user"]["username"] == account.username

    async def test_unknown_is_404(self, client: httpx.AsyncClient, admin: Account) -> None:
        response = await client.get("/admin/users/nobody-here", headers=admin.headers)
        assert response.status_code == 404
        assert errors(response) == {"user": ["not found"]}


class TestChangeRole:
    @pytest.mark.parametrize("role", ["moderator", "admin", "user"])
    async def test_sets_the_role(
        self, client: httpx.AsyncClient, admin: Account, role: str
    ) -> None:
        account = await register(client)
        response = await set_role(client, admin, account, role)
        assert response.json()["user"]["role"] == role
        shown = await client.get(f"/admin/users/{account.username}", headers=admin.headers)
        assert shown.json()["user"]["role"] == role

    async def test_admins_can_demote_other_admins(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        other_admin = await register(client)
        await set_role(client, admin, other_admin, "admin")
        response = await set_role(client, other_admin, admin, "moderator")
        assert response.json()["user"]["role"] == "moderator"

    @pytest.mark.parametrize("role", ["moderator", "user"])
    async def test_demoting_yourself_is_422(
        self, client: httpx.AsyncClient, admin: Account, role: str
    ) -> None:
        response = await client.put(
            f"/admin/users/{admin.username}/role", json={"role": role}, headers=admin.headers
        )
        assert response.status_code == 422
        assert errors(response) == {"role": ["cannot be lowered on your own account"]}
        assert (await client.get("/admin/users", headers=admin.headers)).status_code == 200

    async def test_keeping_your_own_role_is_fine(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        response = await set_role(client, admin, admin, "admin")
        assert response.json()["user"]["role"] == "admin"

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"role": "owner"}, "role"),
            ({"role": "ADMIN"}, "role"),
            ({"role": 1}, "role"),
            ({"role": None}, "role"),
            ({}, "role"),
            ({"user": {"role": "admin"}}, "role"),
        ],
    )
    async def test_bad_role_is_422(
        self, client: httpx.AsyncClient, admin: Account, body: object, field: str
    ) -> None:
        account = await register(client)
        response = await client.put(
            f"/admin/users/{account.username}/role", json=body, headers=admin.headers
        )
        assert response.status_code == 422
        assert field in errors(response)

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient, admin: Account) -> None:
        response = await client.put(
            "/admin/users/nobody-here/role", json={"role": "admin"}, headers=admin.headers
        )
        assert response.status_code == 404


class TestSuspension:
    async def test_tokens_stop_working_at_once(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        account = await register(client)
        user = await suspend(client, admin, account)
        assert user["suspended"] is True
        assert user["suspendedAt"].endswith("Z")

        me = await client.get("/user", headers=account.headers)
        assert me.status_code == 401
        # Reads with optional auth treat a token that no longer works like any invalid one.
        assert (await client.get("/articles", headers=account.headers)).status_code == 401
        refreshed = await client.post(
            "/users/refresh", json={"user": {"refreshToken": account.refresh_token}}
        )
        assert refreshed.status_code == 401

    async def test_signing_in_is_403(self, client: httpx.AsyncClient, admin: Account) -> None:
        account = await register(client)
        await suspend(client, admin, account)
        response = await sign_in(client, account)
        assert response.status_code == 403
        assert errors(response) == {"user": ["is suspended"]}

    async def test_a_wrong_password_does_not_reveal_the_suspension(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        account = await register(client)
        await suspend(client, admin, account)
        response = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": "not the one"}}
        )
        assert response.status_code == 401
        assert errors(response) == {"email or password": ["is invalid"]}

    async def test_a_suspended_admin_loses_access_at_once(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        other_admin = await register(client)
        await set_role(client, admin, other_admin, "admin")
        await suspend(client, admin, other_admin)
        response = await client.get("/admin/users", headers=other_admin.headers)
        assert response.status_code == 401

    async def test_suspending_yourself_is_422(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        response = await client.post(
            f"/admin/users/{admin.username}/suspension", headers=admin.headers
        )
        assert response.status_code == 422
        assert errors(response) == {"user": ["cannot suspend yourself"]}
        assert (await client.get("/admin/users", headers=admin.headers)).status_code == 200

    async def test_suspending_twice_keeps_the_first_time(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        account = await register(client)
        first = await suspend(client, admin, account)
        second = await suspend(client, admin, account)
        assert second["suspendedAt"] == first["suspendedAt"]

    async def test_reinstating_allows_signing_in_but_revives_no_old_token(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        account = await register(client)
        await suspend(client, admin, account)
        response = await client.delete(
            f"/admin/users/{account.username}/suspension", headers=admin.headers
        )
        assert response.status_code == 200
        assert response.json()["user"]["suspended"] is False
        assert response.json()["user"]["suspendedAt"] is None

        assert (await client.get("/user", headers=account.headers)).status_code == 401
        refreshed = await client.post(
            "/users/refresh", json={"user": {"refreshToken": account.refresh_token}}
        )
        assert refreshed.status_code == 401
        signed_in = await sign_in(client, account)
        assert signed_in.status_code == 200
        token = signed_in.json()["user"]["token"]
        me = await client.get("/user", headers={"Authorization": f"Token {token}"})
        assert me.status_code == 200

    async def test_reinstating_an_active_account_changes_nothing(
        self, client: httpx.AsyncClient, admin: Account
    ) -> None:
        account = await register(client)
        response = await client.delete(
            f"/admin/users/{account.username}/suspension", headers=admin.headers
        )
        assert response.status_code == 200
        assert (await client.get("/user", headers=account.headers)).status_code == 200

    async def test_unknown_user_is_404(self, client: httpx.AsyncClient, admin: Account) -> None:
        for method in ("POST", "DELETE"):
            response = await client.request(
                method, "/admin/users/nobody-here/suspension", headers=admin.headers
            )
            assert response.status_code == 404


class TestModeration:
    async def add_comment(self, client: httpx.AsyncClient, author: Account, slug: str) -> int:
        response = await client.post(
            f"/articles/{slug}/comments",
            json={"comment": {"body": "First!"}},
            headers=author.headers,
        )
        assert response.status_code == 200, response.text
        comment_id: int = response.json()["comment"]["id"]
        return comment_id

    @pytest.mark.parametrize("role", ["moderator", "admin"])
    async def test_staff_delete_any_article(
        self, client: httpx.AsyncClient, admin: Account, role: str
    ) -> None:
        staff = await register(client)
        await set_role(client, admin, staff, role)
        author = await register(client)
        article = await create_article(client, author)
        response = await client.delete(f"/articles/{article['slug']}", headers=staff.headers)
        assert response.status_code == 204
        assert (await client.get(f"/articles/{article['slug']}")).status_code == 404

    @pytest.mark.parametrize("role", ["moderator", "admin"])
    async def test_staff_delete_any_comment(
        self, client: httpx.AsyncClient, admin: Account, role: str
    ) -> None:
        staff = await register(client)
        await set_role(client, admin, staff, role)
        author = await register(client)
        article = await create_article(client, author)
        comment_id = await self.add_comment(client, author, article["slug"])
        response = await client.delete(
            f"/articles/{article['slug']}/comments/{comment_id}", headers=staff.headers
        )
        assert response.status_code == 204
        comments = await client.get(f"/articles/{article['slug']}/comments")
        assert comments.json()["comments"] == []

    @pytest.mark.parametrize("role", ["moderator", "admin"])
    async def test_staff_cannot_edit_others_articles(
        self, client: httpx.AsyncClient, admin: Account, role: str
    ) -> None:
        staff = await register(client)
        await set_role(client, admin, staff, role)
        author = await register(client)
        article = await create_article(client, author)
        response = await client.put(
            f"/articles/{article['slug']}",
            json={"article": {"title": "Moderated"}},
            headers=staff.headers,
        )
        assert response.status_code == 403
        assert errors(response) == {"article": ["can only be changed by its author"]}

    async def test_users_cannot_delete_others_articles_or_comments(
        self, client: httpx.AsyncClient
    ) -> None:
        author = await register(client)
        intruder = await register(client)
        article = await create_article(client, author)
        comment_id = await self.add_comment(client, author, article["slug"])
        response = await client.delete(f"/articles/{article['slug']}", headers=intruder.headers)
        assert response.status_code == 403
        response = await client.delete(
            f"/articles/{article['slug']}/comments/{comment_id}", headers=intruder.headers
        )
        assert response.status_code == 403
        assert errors(response) == {"comment": ["can only be deleted by its author or a moderator"]}

    async def test_a_demoted_moderator_loses_the_power_at_once(
        self, client: httpx.AsyncClient, admin: Account, moderator: Account
    ) -> None:
        author = await register(client)
        article = await create_article(client, author)
        await set_role(client, admin, moderator, "user")
        response = await client.delete(f"/articles/{article['slug']}", headers=moderator.headers)
        assert response.status_code == 403

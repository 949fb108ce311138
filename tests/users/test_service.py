"""What the account services do around the slow password hash."""

from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.session import release_connection
from conduit.users import service
from conduit.users.models import User
from tests.helpers import register, unique_name

pytestmark = pytest.mark.anyio


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str, session: AsyncSession) -> list[bool]:
    """Record, at each call of the service's `name`, whether the session held a transaction
    (and so a pooled connection)."""
    real: Callable[..., Awaitable[Any]] = getattr(service, name)
    seen: list[bool] = []

    async def recording(*args: Any, **kwargs: Any) -> Any:
        seen.append(session.in_transaction())
        return await real(*args, **kwargs)

    monkeypatch.setattr(service, name, recording)
    return seen


class TestAuthenticate:
    async def test_no_connection_is_held_while_the_password_is_verified(
        self, client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        account = await register(client)
        seen = spy_on(monkeypatch, "verify_password", session)
        response = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": account.password}}
        )
        assert response.status_code == 200, response.text
        assert response.json()["user"]["username"] == account.username
        assert seen == [False]


class TestRegister:
    async def test_no_connection_is_held_while_the_password_is_hashed(
        self, client: httpx.AsyncClient, session: AsyncSession, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        seen = spy_on(monkeypatch, "hash_password", session)
        account = await register(client)
        assert seen == [False]
        # The account was stored all the same.
        response = await client.post(
            "/users/login", json={"user": {"email": account.email, "password": account.password}}
        )
        assert response.status_code == 200, response.text


class TestReleaseConnection:
    async def test_keeps_what_was_loaded(self, session: AsyncSession) -> None:
        user = User(username=unique_name(), email=f"{unique_name()}@example.com", password_hash="x")
        session.add(user)
        await session.flush()
        await session.commit()
        session.expunge_all()
        loaded = (await session.execute(select(User).where(User.id == user.id))).scalar_one()
        assert session.in_transaction()
        await release_connection(session)
        assert not session.in_transaction()
        # Still loaded: no lazy load (which would fail outside a greenlet) is needed.
        assert loaded.username == user.username

    async def test_refuses_a_session_with_pending_writes(self, session: AsyncSession) -> None:
        session.add(User(username=unique_name(), email=f"{unique_name()}@example.com"))
        with pytest.raises(RuntimeError, match="pending writes"):
            await release_connection(session)

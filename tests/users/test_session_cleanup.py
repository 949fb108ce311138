"""The hourly clean-up of ended sign-ins (`users.delete_ended_sessions`)."""

from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.security import hash_refresh_token
from conduit.users.models import RefreshToken, RefreshTokenFamily
from tests.helpers import Account, register
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio


async def login(client: httpx.AsyncClient, account: Account) -> str:
    response = await client.post(
        "/users/login", json={"user": {"email": account.email, "password": account.password}}
    )
    assert response.status_code == 200, response.text
    token: str = response.json()["user"]["refreshToken"]
    return token


async def refresh(client: httpx.AsyncClient, refresh_token: str) -> httpx.Response:
    return await client.post("/users/refresh", json={"user": {"refreshToken": refresh_token}})


async def family_of(session: AsyncSession, refresh_token: str) -> int | None:
    family_id: int | None = await session.scalar(
        select(RefreshToken.family_id).where(
            RefreshToken.token_hash == hash_refresh_token(refresh_token)
        )
    )
    return family_id


async def families(session: AsyncSession) -> set[int]:
    return set(await session.scalars(select(RefreshTokenFamily.id)))


async def tokens_of(session: AsyncSession, family_id: int) -> int:
    count: int = (
        await session.scalar(
            select(func.count())
            .select_from(RefreshToken)
            .where(RefreshToken.family_id == family_id)
        )
        or 0
    )
    return count


async def expire(session: AsyncSession, family_id: int, *, seconds_ago: int = 1) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id)
        .values(expires_at=func.now() - timedelta(seconds=seconds_ago))
    )


async def test_deletes_ended_sign_ins_and_keeps_live_ones(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    account = await register(client)
    registered = account.refresh_token

    logged_out = await login(client, account)
    response = await client.post("/users/logout", json={"user": {"refreshToken": logged_out}})
    assert response.status_code == 204

    expired = await login(client, account)
    await expire(session, await family_of(session, expired) or 0)

    # Rotated twice: older tokens retired (and one of them expired), the newest live.
    rotated = await login(client, account)
    first_rotation = (await refresh(client, rotated)).json()["user"]["refreshToken"]
    newest = (await refresh(client, first_rotation)).json()["user"]["refreshToken"]
    rotated_family = await family_of(session, newest)
    assert rotated_family is not None
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == hash_refresh_token(rotated))
        .values(expires_at=func.now() - timedelta(seconds=1))
    )

    ids = {
        name: await family_of(session, token)
        for name, token in {
            "registered": registered,
            "logged_out": logged_out,
            "expired": expired,
            "rotated": newest,
        }.items()
    }
    assert None not in ids.values()
    # Someone else's ended sign-in goes too.
    other = await register(client)
    other_family = await family_of(session, other.refresh_token)
    assert other_family is not None
    await expire(session, other_family)

    await jobs.run_periodic("users.delete_ended_sessions")

    assert await families(session) == {ids["registered"], ids["rotated"]}
    for ended in (ids["logged_out"], ids["expired"], other_family):
        assert ended is not None
        assert await tokens_of(session, ended) == 0
    # Kept whole, retired tokens included: reuse detection still needs them.
    assert await tokens_of(session, rotated_family) == 3

    # The kept sign-ins still refresh; the deleted ones are simply unknown.
    assert (await refresh(client, registered)).status_code == 200
    assert (await refresh(client, newest)).status_code == 200
    for gone in (logged_out, expired, other.refresh_token):
        assert (await refresh(client, gone)).status_code == 401


async def test_a_token_expiring_later_keeps_its_sign_in(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    account = await register(client)
    family_id = await family_of(session, account.refresh_token)
    assert family_id is not None
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id)
        .values(expires_at=func.now() + timedelta(seconds=5))
    )

    await jobs.run_periodic("users.delete_ended_sessions")

    assert family_id in await families(session)


async def test_nothing_to_delete_is_harmless(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    await jobs.run_periodic("users.delete_ended_sessions")
    account = await register(client)
    await jobs.run_periodic("users.delete_ended_sessions")
    assert (await refresh(client, account.refresh_token)).status_code == 200

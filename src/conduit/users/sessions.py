"""Refresh-token families: one per sign-in, rotated on every refresh.

A refresh exchanges the presented token for a new one in the same family and retires the old
one. A retired token presented again means two parties hold the family, one of them not its
owner, and there is no telling which: the whole family is revoked, so both must sign in again.
"""

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload

from conduit.platform.errors import Unauthorized
from conduit.platform.security import hash_refresh_token, new_refresh_token
from conduit.users.models import RefreshToken, RefreshTokenFamily, User


class InvalidRefreshToken(Unauthorized):
    field = "refreshToken"
    message = "is invalid"


class RefreshTokenReused(InvalidRefreshToken):
    message = "has already been used; its session has been ended"
    keeps_changes = True


async def _issue(session: AsyncSession, *, family: RefreshTokenFamily, ttl_seconds: int) -> str:
    token = new_refresh_token()
    session.add(
        RefreshToken(
            family=family,
            token_hash=hash_refresh_token(token),
            expires_at=datetime.now(UTC) + timedelta(seconds=ttl_seconds),
        )
    )
    await session.flush()
    return token


async def _find(session: AsyncSession, token: str, *, lock: bool = False) -> RefreshToken | None:
    statement = (
        select(RefreshToken)
        .options(
            joinedload(RefreshToken.family, innerjoin=True).joinedload(
                RefreshTokenFamily.user, innerjoin=True
            )
        )
        .where(RefreshToken.token_hash == hash_refresh_token(token))
    )
    if lock:
        # Two refreshes with the same token queue here; the second sees it rotated.
        statement = statement.with_for_update(of=RefreshToken)
    return (await session.scalars(statement)).unique().one_or_none()


async def start(session: AsyncSession, *, user: User, ttl_seconds: int) -> str:
    """Open a family for a new sign-in and return its first refresh token."""
    family = RefreshTokenFamily(user=user)
    session.add(family)
    return await _issue(session, family=family, ttl_seconds=ttl_seconds)


async def rotate(session: AsyncSession, *, token: str, ttl_seconds: int) -> tuple[User, str]:
    """Retire `token` and return its owner with the family's next refresh token."""
    current = await _find(session, token, lock=True)
    if current is None:
        raise InvalidRefreshToken()
    family = current.family
    if family.revoked_at is not None:
        raise InvalidRefreshToken("has been revoked")
    now = datetime.now(UTC)
    if current.rotated_at is not None:
        family.revoked_at = now
        await session.flush()
        raise RefreshTokenReused()
    if current.expires_at <= now:
        raise InvalidRefreshToken("has expired")
    if family.user.is_suspended:
        raise InvalidRefreshToken("belongs to a suspended account")
    current.rotated_at = now
    return family.user, await _issue(session, family=family, ttl_seconds=ttl_seconds)


async def end(session: AsyncSession, *, token: str) -> None:
    """Revoke the family `token` belongs to (sign out); revoking twice is harmless."""
    current = await _find(session, token)
    if current is None:
        raise InvalidRefreshToken()
    if current.family.revoked_at is None:
        current.family.revoked_at = datetime.now(UTC)
        await session.flush()


async def revoke_all(session: AsyncSession, *, user: User) -> None:
    """Revoke every family of `user`: no refresh token of theirs works afterwards."""
    await session.execute(
        update(RefreshTokenFamily)
        .where(RefreshTokenFamily.user_id == user.id, RefreshTokenFamily.revoked_at.is_(None))
        .values(revoked_at=func.now())
    )


async def delete_ended(session: AsyncSession) -> int:
    """Delete the sign-ins that can no longer refresh: revoked, or with every token expired.
    Their tokens go with them. Returns how many were deleted."""
    live_token = select(RefreshToken.id).where(
        RefreshToken.family_id == RefreshTokenFamily.id, RefreshToken.expires_at > func.now()
    )
    result = await session.execute(
        delete(RefreshTokenFamily)
        .where(RefreshTokenFamily.revoked_at.is_not(None) | ~live_token.exists())
        .returning(RefreshTokenFamily.id)
    )
    return len(result.all())

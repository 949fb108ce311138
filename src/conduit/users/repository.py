"""Queries on user accounts.

Usernames and emails compare case-insensitively, as their unique indexes do.
"""

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.users.models import User


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def get_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.execute(select(User).where(func.lower(User.email) == email.lower()))
    return result.scalar_one_or_none()


async def get_by_username(session: AsyncSession, username: str) -> User | None:
    result = await session.execute(
        select(User).where(func.lower(User.username) == username.lower())
    )
    return result.scalar_one_or_none()


async def taken_fields(
    session: AsyncSession, *, username: str | None, email: str | None, exclude_id: int | None = None
) -> set[str]:
    """Which of `username` and `email` already belong to another account."""
    conditions = []
    if username is not None:
        conditions.append(func.lower(User.username) == username.lower())
    if email is not None:
        conditions.append(func.lower(User.email) == email.lower())
    if not conditions:
        return set()
    statement = select(User.username, User.email).where(
        conditions[0] if len(conditions) == 1 else conditions[0] | conditions[1]
    )
    if exclude_id is not None:
        statement = statement.where(User.id != exclude_id)
    taken: set[str] = set()
    for row in await session.execute(statement):
        if username is not None and row.username.lower() == username.lower():
            taken.add("username")
        if email is not None and row.email.lower() == email.lower():
            taken.add("email")
    return taken

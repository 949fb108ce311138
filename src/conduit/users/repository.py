"""Queries on user accounts.

Usernames and emails compare case-insensitively, as their unique indexes do.
"""

from sqlalchemy import BigInteger, ColumnElement, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.users.models import Role, User

# Every signed-in request loads its caller: the statement is built once.
_BY_ID = select(User).where(User.id == bindparam("user_id", type_=BigInteger))


async def get_by_id(session: AsyncSession, user_id: int) -> User | None:
    result = await session.execute(_BY_ID, {"user_id": user_id})
    return result.scalar_one_or_none()


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


async def get_page(
    session: AsyncSession,
    *,
    role: Role | None = None,
    suspended: bool | None = None,
    limit: int,
    offset: int,
) -> tuple[list[User], int]:
    """Accounts newest first, optionally of one role or suspension state, with the total count."""
    conditions: list[ColumnElement[bool]] = []
    if role is not None:
        conditions.append(User.role == role)
    if suspended is not None:
        conditions.append(
            User.suspended_at.is_not(None) if suspended else User.suspended_at.is_(None)
        )
    total = await session.scalar(select(func.count()).select_from(User).where(*conditions))
    users = await session.scalars(
        select(User)
        .where(*conditions)
        .order_by(User.created_at.desc(), User.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return list(users), total or 0

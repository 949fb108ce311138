"""User management for administrators: listing accounts, roles and suspensions.

An admin cannot demote or suspend themselves, so the last admin cannot lock everyone out.
"""

from sqlalchemy.ext.asyncio import AsyncSession

from conduit.admin.schemas import AdminUserList, AdminUserRead
from conduit.platform.errors import NotFound, ValidationFailed
from conduit.users import repository as users_repository
from conduit.users import service as users_service
from conduit.users.models import Role, User


class UserNotFound(NotFound):
    field = "user"


def to_read(user: User) -> AdminUserRead:
    return AdminUserRead(
        id=user.id,
        username=user.username,
        email=user.email,
        bio=user.bio,
        image=user.image or "",
        role=user.role,
        suspended=user.is_suspended,
        suspended_at=user.suspended_at,
        created_at=user.created_at,
    )


async def list_users(
    session: AsyncSession, *, role: Role | None, suspended: bool | None, limit: int, offset: int
) -> AdminUserList:
    users, total = await users_repository.get_page(
        session, role=role, suspended=suspended, limit=limit, offset=offset
    )
    return AdminUserList(users=[to_read(user) for user in users], users_count=total)


async def get_user(session: AsyncSession, username: str) -> User:
    user = await users_repository.get_by_username(session, username)
    if user is None:
        raise UserNotFound()
    return user


async def change_role(session: AsyncSession, *, admin: User, user: User, role: Role) -> User:
    if user.id == admin.id and role is not Role.admin:
        raise ValidationFailed("cannot be lowered on your own account", field="role")
    return await users_service.set_role(session, user=user, role=role)


async def suspend(session: AsyncSession, *, admin: User, user: User) -> User:
    """Suspend `user`: their tokens stop working at once and they cannot sign in."""
    if user.id == admin.id:
        raise ValidationFailed("cannot suspend yourself", field="user")
    return await users_service.suspend(session, user=user)


async def reinstate(session: AsyncSession, *, user: User) -> User:
    return await users_service.reinstate(session, user=user)

"""Registration, login, account changes, roles and suspension."""

from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.session import release_connection
from conduit.platform.errors import ConduitError, Forbidden, ValidationFailed
from conduit.platform.jobs.queue import publish
from conduit.platform.security import hash_password, verify_password
from conduit.profiles import service as profiles_service
from conduit.users import repository, sessions
from conduit.users.models import Role, User
from conduit.users.schemas import PASSWORD_MIN_LENGTH, NewUser, UpdateUser


class InvalidCredentials(ConduitError):
    status_code = 401
    field = "email or password"
    message = "is invalid"


class AccountSuspended(Forbidden):
    field = "user"
    message = "is suspended"


def _taken_error(fields: set[str]) -> ValidationFailed:
    return ValidationFailed.of({field: ["has already been taken"] for field in sorted(fields)})


async def _flush_unique(session: AsyncSession, *, username: str | None, email: str | None) -> None:
    """Flush, turning a lost race on the unique indexes into the same 422 as the pre-check."""
    try:
        await session.flush()
    except IntegrityError as error:
        constraint = str(error.orig)
        fields = {name for name in ("username", "email") if f"_{name}_lower" in constraint}
        raise _taken_error(fields or {"username"}) from None


async def register(session: AsyncSession, new_user: NewUser) -> User:
    taken = await repository.taken_fields(session, username=new_user.username, email=new_user.email)
    if taken:
        raise _taken_error(taken)
    # As for a login: no connection held while the password is hashed.
    await release_connection(session)
    user = User(
        username=new_user.username,
        email=new_user.email,
        password_hash=await hash_password(new_user.password),
    )
    session.add(user)
    await _flush_unique(session, username=new_user.username, email=new_user.email)
    await publish(session, "user.registered", user_id=user.id)
    return user


async def authenticate(session: AsyncSession, *, email: str, password: str) -> User:
    user = await repository.get_by_email(session, email)
    # A hash takes a core for a fifth of a second, and longer queued behind other logins: a
    # burst of logins that kept their connections meanwhile would leave every other request
    # of the process waiting for one.
    await release_connection(session)
    valid, updated_hash = await verify_password(password, user.password_hash if user else None)
    if user is None or not valid:
        raise InvalidCredentials()
    # Only after the password matched, so that a suspension is not revealed to anyone else.
    if user.is_suspended:
        raise AccountSuspended()
    if updated_hash is not None:
        user.password_hash = updated_hash
    return user


async def update(session: AsyncSession, *, user: User, changes: UpdateUser) -> User:
    fields = changes.model_fields_set
    username = changes.username if "username" in fields else None
    email = changes.email if "email" in fields else None
    if changes.password and len(changes.password) < PASSWORD_MIN_LENGTH:
        raise ValidationFailed(
            f"is too short (minimum is {PASSWORD_MIN_LENGTH} characters)", field="password"
        )
    taken = await repository.taken_fields(
        session, username=username, email=email, exclude_id=user.id
    )
    if taken:
        raise _taken_error(taken)
    previous_username = user.username
    if username is not None:
        user.username = username
    if email is not None:
        user.email = email
    if changes.password:
        user.password_hash = await hash_password(changes.password)
        await end_all_sessions(session, user=user)
    if "bio" in fields:
        user.bio = changes.bio or ""
    if "image" in fields:
        user.image = changes.image or None
    await _flush_unique(session, username=username, email=email)
    if fields & {"username", "bio", "image"}:
        profiles_service.public_profile_changed(session, previous_username, user.username)
    return user


async def end_all_sessions(session: AsyncSession, *, user: User) -> None:
    """Revoke every access and refresh token of `user`."""
    user.token_version += 1
    await sessions.revoke_all(session, user=user)
    await session.flush()


async def set_role(session: AsyncSession, *, user: User, role: Role) -> User:
    user.role = role
    await session.flush()
    return user


async def suspend(session: AsyncSession, *, user: User) -> User:
    """Suspend `user` and end their sessions, so that reinstating them revives no old token."""
    if not user.is_suspended:
        user.suspended_at = datetime.now(UTC)
        await end_all_sessions(session, user=user)
    return user


async def reinstate(session: AsyncSession, *, user: User) -> User:
    user.suspended_at = None
    await session.flush()
    return user


async def ensure_admin(
    session: AsyncSession, *, email: str, new_user: NewUser | None
) -> tuple[User, bool]:
    """Promote the account with `email` to admin and reinstate it, or create it from
    `new_user` when there is none; the flag says whether it was created."""
    user = await repository.get_by_email(session, email)
    created = user is None
    if user is None:
        if new_user is None:
            raise ValidationFailed("has no account; give a username and password", field="email")
        user = await register(session, new_user)
    user.role = Role.admin
    user.suspended_at = None
    await session.flush()
    return user, created

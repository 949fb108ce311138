"""Registration, login and account changes."""

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.errors import ConduitError, ValidationFailed
from conduit.platform.security import hash_password, verify_password
from conduit.users import repository
from conduit.users.models import User
from conduit.users.schemas import PASSWORD_MIN_LENGTH, NewUser, UpdateUser


class InvalidCredentials(ConduitError):
    status_code = 401
    field = "email or password"
    message = "is invalid"


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
    user = User(
        username=new_user.username,
        email=new_user.email,
        password_hash=await hash_password(new_user.password),
    )
    session.add(user)
    await _flush_unique(session, username=new_user.username, email=new_user.email)
    return user


async def authenticate(session: AsyncSession, *, email: str, password: str) -> User:
    user = await repository.get_by_email(session, email)
    valid, updated_hash = await verify_password(password, user.password_hash if user else None)
    if user is None or not valid:
        raise InvalidCredentials()
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
    if username is not None:
        user.username = username
    if email is not None:
        user.email = email
    if changes.password:
        user.password_hash = await hash_password(changes.password)
    if "bio" in fields:
        user.bio = changes.bio or ""
    if "image" in fields:
        user.image = changes.image or None
    await _flush_unique(session, username=username, email=email)
    return user

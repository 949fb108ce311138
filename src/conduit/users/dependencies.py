"""Who is calling: `CurrentUser` for routes that need a login, `OptionalUser` for reads, and
`require_role` for routes reserved to moderators or admins."""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request, Security

from conduit.platform.db.session import SessionDep
from conduit.platform.errors import Forbidden, Unauthorized
from conduit.platform.observability.logging import bind_request
from conduit.platform.security import authorization_header, read_access_token, token_from_header
from conduit.users import repository
from conduit.users.models import Role, User


async def optional_token(
    header: Annotated[str | None, Security(authorization_header)],
) -> str | None:
    return token_from_header(header)


async def required_token(token: Annotated[str | None, Depends(optional_token)]) -> str:
    if token is None:
        raise Unauthorized("is missing")
    return token


async def _user_for(request: Request, session: SessionDep, token: str) -> User:
    claims = read_access_token(token, secret=request.app.state.jwt_secret)
    bind_request(user_id=claims.user_id)
    user = await repository.get_by_id(session, claims.user_id)
    if user is None:
        raise Unauthorized("is invalid")
    if user.token_version != claims.token_version:
        raise Unauthorized("has been revoked")
    if user.is_suspended:
        raise Unauthorized("belongs to a suspended account")
    return user


async def optional_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(optional_token)]
) -> User | None:
    return None if token is None else await _user_for(request, session, token)


async def current_user(caller: Annotated[User | None, Depends(optional_user)]) -> User:
    # Built on optional_user, so that a route needing a login whose other dependencies also
    # ask who is calling (ArticleBySlug does, for the viewer's flags) shares FastAPI's
    # per-request result: the token is read and the account loaded once, not twice.
    if caller is None:
        raise Unauthorized("is missing")
    return caller


AccessToken = Annotated[str, Depends(required_token)]
CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]


def require_role(role: Role) -> Callable[[User], Awaitable[User]]:
    """A dependency giving the caller when their role includes `role`; 403 otherwise."""

    async def caller_with_role(user: CurrentUser) -> User:
        if not user.role.includes(role):
            raise Forbidden(f"requires the {role} role", field="user")
        return user

    return caller_with_role


# One instance each, so that a router-level guard and a route parameter share FastAPI's
# per-request cache instead of loading the caller twice.
admin_only = require_role(Role.admin)
AdminOnly = Annotated[User, Depends(admin_only)]

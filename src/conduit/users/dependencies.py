"""Who is calling: `CurrentUser` for routes that need a login, `OptionalUser` for reads."""

from typing import Annotated

from fastapi import Depends, Request, Security

from conduit.platform.db.session import SessionDep
from conduit.platform.errors import Unauthorized
from conduit.platform.security import authorization_header, token_from_header, user_id_from_token
from conduit.users import repository
from conduit.users.models import User


async def optional_token(
    header: Annotated[str | None, Security(authorization_header)],
) -> str | None:
    return token_from_header(header)


async def required_token(token: Annotated[str | None, Depends(optional_token)]) -> str:
    if token is None:
        raise Unauthorized("is missing")
    return token


async def _user_for(request: Request, session: SessionDep, token: str) -> User:
    user_id = user_id_from_token(token, secret=request.app.state.jwt_secret)
    user = await repository.get_by_id(session, user_id)
    if user is None:
        raise Unauthorized("is invalid")
    return user


async def current_user(
    request: Request, session: SessionDep, token: Annotated[str, Depends(required_token)]
) -> User:
    return await _user_for(request, session, token)


async def optional_user(
    request: Request, session: SessionDep, token: Annotated[str | None, Depends(optional_token)]
) -> User | None:
    return None if token is None else await _user_for(request, session, token)


AccessToken = Annotated[str, Depends(required_token)]
CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]

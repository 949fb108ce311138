from fastapi import APIRouter, Depends, Request, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.rate_limit import LoginGuard, route_limit
from conduit.platform.security import create_access_token
from conduit.users import service, sessions
from conduit.users.dependencies import AccessToken, CurrentUser
from conduit.users.models import User
from conduit.users.schemas import (
    LoginUserEnvelope,
    NewUserEnvelope,
    SignedInUserEnvelope,
    SignedInUserRead,
    UpdateUserEnvelope,
    UserEnvelope,
    UserRead,
    UserRefreshTokenEnvelope,
)

router = APIRouter(tags=["User and Authentication"], route_class=AutoCommitRoute)


def _access_token(request: Request, user: User) -> str:
    return create_access_token(
        user.id,
        token_version=user.token_version,
        secret=request.app.state.jwt_secret,
        ttl_seconds=request.app.state.settings.access_token_ttl_seconds,
    )


def _refresh_token_ttl(request: Request) -> int:
    ttl: int = request.app.state.settings.refresh_token_ttl_seconds
    return ttl


def _read(user: User, token: str) -> UserRead:
    return UserRead(
        email=user.email, token=token, username=user.username, bio=user.bio, image=user.image or ""
    )


def _envelope(user: User, token: str) -> UserEnvelope:
    return UserEnvelope(user=_read(user, token))


def _signed_in(request: Request, user: User, refresh_token: str) -> SignedInUserEnvelope:
    return SignedInUserEnvelope(
        user=SignedInUserRead(
            email=user.email,
            token=_access_token(request, user),
            refresh_token=refresh_token,
            username=user.username,
            bio=user.bio,
            image=user.image or "",
        )
    )


async def _sign_in(request: Request, session: AsyncSession, user: User) -> SignedInUserEnvelope:
    refresh_token = await sessions.start(
        session, user=user, ttl_seconds=_refresh_token_ttl(request)
    )
    return _signed_in(request, user, refresh_token)


@router.post(
    "/users",
    status_code=status.HTTP_201_CREATED,
    summary="Register a new user",
    dependencies=[Depends(route_limit("register"))],
)
async def register(
    request: Request, body: NewUserEnvelope, session: SessionDep
) -> SignedInUserEnvelope:
    user = await service.register(session, body.user)
    return await _sign_in(request, session, user)


@router.post(
    "/users/login",
    summary="Existing user login",
    responses={
        403: {"description": "The account is suspended"},
        429: {"description": "Too many attempts, or too many failed ones for the account or IP"},
    },
    dependencies=[Depends(route_limit("login"))],
)
async def login(
    request: Request, body: LoginUserEnvelope, session: SessionDep, throttle: LoginGuard
) -> SignedInUserEnvelope:
    email = body.user.email
    await throttle.ensure_allowed(email)
    try:
        user = await service.authenticate(session, email=email, password=body.user.password)
    except service.InvalidCredentials:
        await throttle.record_failure(email)
        raise
    await throttle.record_success(email)
    return await _sign_in(request, session, user)


@router.post(
    "/users/refresh",
    summary="Exchange a refresh token for new tokens",
    description=(
        "Returns a new access token and a new refresh token; the refresh token sent stops "
        "working. Sending a refresh token that was already exchanged ends its whole session "
        "(every token rotated from the same sign-in), since it may have been stolen."
    ),
    responses={401: {"description": "Unknown, expired, revoked or reused refresh token"}},
)
async def refresh(
    request: Request, body: UserRefreshTokenEnvelope, session: SessionDep
) -> SignedInUserEnvelope:
    user, refresh_token = await sessions.rotate(
        session, token=body.user.refresh_token, ttl_seconds=_refresh_token_ttl(request)
    )
    return _signed_in(request, user, refresh_token)


@router.post(
    "/users/logout",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="End the session a refresh token belongs to",
    responses={401: {"description": "Unknown refresh token"}},
)
async def logout(body: UserRefreshTokenEnvelope, session: SessionDep) -> None:
    await sessions.end(session, token=body.user.refresh_token)


@router.get("/user", summary="Get current user")
async def get_current_user(user: CurrentUser, token: AccessToken) -> UserEnvelope:
    return _envelope(user, token)


@router.put(
    "/user",
    summary="Update current user",
    description=(
        "Changing the password ends every session of the account; the response then carries "
        "a new access token and a new `refreshToken` for this client."
    ),
)
async def update_current_user(
    request: Request,
    body: UpdateUserEnvelope,
    session: SessionDep,
    user: CurrentUser,
    token: AccessToken,
) -> UserEnvelope | SignedInUserEnvelope:
    token_version = user.token_version
    user = await service.update(session, user=user, changes=body.user)
    if user.token_version != token_version:
        return await _sign_in(request, session, user)
    return _envelope(user, token)

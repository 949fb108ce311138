from fastapi import APIRouter, Request, status

from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.security import create_access_token
from conduit.users import service
from conduit.users.dependencies import AccessToken, CurrentUser
from conduit.users.models import User
from conduit.users.schemas import (
    LoginUserEnvelope,
    NewUserEnvelope,
    UpdateUserEnvelope,
    UserEnvelope,
    UserRead,
)

router = APIRouter(tags=["User and Authentication"], route_class=AutoCommitRoute)


def _issue_token(request: Request, user: User) -> str:
    return create_access_token(
        user.id,
        secret=request.app.state.jwt_secret,
        ttl_seconds=request.app.state.settings.access_token_ttl_seconds,
    )


def _envelope(user: User, token: str) -> UserEnvelope:
    return UserEnvelope(
        user=UserRead(
            email=user.email,
            token=token,
            username=user.username,
            bio=user.bio,
            image=user.image or "",
        )
    )


@router.post("/users", status_code=status.HTTP_201_CREATED, summary="Register a new user")
async def register(request: Request, body: NewUserEnvelope, session: SessionDep) -> UserEnvelope:
    user = await service.register(session, body.user)
    return _envelope(user, _issue_token(request, user))


@router.post("/users/login", summary="Existing user login")
async def login(request: Request, body: LoginUserEnvelope, session: SessionDep) -> UserEnvelope:
    user = await service.authenticate(session, email=body.user.email, password=body.user.password)
    return _envelope(user, _issue_token(request, user))


@router.get("/user", summary="Get current user")
async def get_current_user(user: CurrentUser, token: AccessToken) -> UserEnvelope:
    return _envelope(user, token)


@router.put("/user", summary="Update current user")
async def update_current_user(
    body: UpdateUserEnvelope, session: SessionDep, user: CurrentUser, token: AccessToken
) -> UserEnvelope:
    user = await service.update(session, user=user, changes=body.user)
    return _envelope(user, token)

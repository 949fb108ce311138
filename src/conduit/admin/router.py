from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from conduit.admin import service
from conduit.admin.dependencies import ManagedUser
from conduit.admin.schemas import AdminUserEnvelope, AdminUserList, RoleChange
from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.errors import ValidationFailed
from conduit.users.dependencies import AdminOnly, admin_only
from conduit.users.models import Role

router = APIRouter(
    prefix="/admin",
    tags=["Admin"],
    route_class=AutoCommitRoute,
    dependencies=[Depends(admin_only)],
    responses={
        401: {"description": "Missing, invalid or revoked token"},
        403: {"description": "The caller is not an admin"},
    },
)

MAX_OFFSET = 2**31 - 1
NO_SUCH_ACCOUNT: dict[int | str, dict[str, object]] = {404: {"description": "No such account"}}


@router.get("/users", summary="List accounts, newest first")
async def list_users(
    request: Request,
    session: SessionDep,
    role: Annotated[Role | None, Query(description="Only accounts with this role")] = None,
    suspended: Annotated[
        bool | None, Query(description="Only suspended (true) or active (false) accounts")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, description="Number of accounts to return (at most MAX_PAGE_SIZE)")
    ] = 20,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Number to skip")] = 0,
) -> AdminUserList:
    maximum: int = request.app.state.settings.max_page_size
    if limit > maximum:
        raise ValidationFailed(f"must be less than or equal to {maximum}", field="limit")
    return await service.list_users(
        session, role=role, suspended=suspended, limit=limit, offset=offset
    )


@router.get("/users/{username}", summary="Get an account", responses=NO_SUCH_ACCOUNT)
async def get_user(user: ManagedUser) -> AdminUserEnvelope:
    return AdminUserEnvelope(user=service.to_read(user))


@router.put(
    "/users/{username}/role",
    summary="Change an account's role",
    description="Admins cannot lower their own role (422).",
    responses=NO_SUCH_ACCOUNT,
)
async def change_role(
    body: RoleChange, user: ManagedUser, admin: AdminOnly, session: SessionDep
) -> AdminUserEnvelope:
    user = await service.change_role(session, admin=admin, user=user, role=body.role)
    return AdminUserEnvelope(user=service.to_read(user))


@router.post(
    "/users/{username}/suspension",
    summary="Suspend an account",
    description=(
        "The account's tokens stop working at once (401) and signing in is refused (403) "
        "until it is reinstated; reinstating does not revive the old tokens. Admins cannot "
        "suspend themselves (422)."
    ),
    responses=NO_SUCH_ACCOUNT,
)
async def suspend(user: ManagedUser, admin: AdminOnly, session: SessionDep) -> AdminUserEnvelope:
    user = await service.suspend(session, admin=admin, user=user)
    return AdminUserEnvelope(user=service.to_read(user))


@router.delete(
    "/users/{username}/suspension",
    summary="Reinstate a suspended account",
    responses=NO_SUCH_ACCOUNT,
)
async def reinstate(user: ManagedUser, session: SessionDep) -> AdminUserEnvelope:
    user = await service.reinstate(session, user=user)
    return AdminUserEnvelope(user=service.to_read(user))

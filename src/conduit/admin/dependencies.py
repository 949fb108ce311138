from typing import Annotated

from fastapi import Depends, Path

from conduit.admin import service
from conduit.platform.db.session import SessionDep
from conduit.platform.schemas import Text
from conduit.users.dependencies import AdminOnly
from conduit.users.models import USERNAME_MAX_LENGTH, User

UsernamePath = Annotated[
    Text, Path(max_length=USERNAME_MAX_LENGTH, description="Username of the account")
]


# Takes AdminOnly itself so that the role is checked before the account is looked up: callers
# who may not manage accounts cannot probe which ones exist.
async def user_by_username(username: UsernamePath, session: SessionDep, _: AdminOnly) -> User:
    return await service.get_user(session, username)


ManagedUser = Annotated[User, Depends(user_by_username)]

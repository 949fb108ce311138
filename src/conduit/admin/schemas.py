from pydantic import Field

from conduit.platform.schemas import InputModel, Timestamp, WireModel
from conduit.users.models import Role


class AdminUserRead(WireModel):
    """An account as administrators see it: the profile, the email, the role and the status."""

    id: int
    username: str
    email: str
    bio: str
    image: str
    role: Role
    suspended: bool
    suspended_at: Timestamp | None
    created_at: Timestamp


class AdminUserEnvelope(WireModel):
    user: AdminUserRead


class AdminUserList(WireModel):
    users: list[AdminUserRead]
    users_count: int = Field(description="Number of all matching accounts, not only this page")


class RoleChange(InputModel):
    role: Role

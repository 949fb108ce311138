from typing import Annotated

from pydantic import Field, Strict, field_validator, model_validator

from conduit.notifications.models import Kind
from conduit.platform.schemas import InputModel, Timestamp, WireModel
from conduit.profiles.schemas import ProfileRead

MAX_IDS_PER_REQUEST = 1_000
MAX_NOTIFICATION_ID = 2**63 - 1


class NotificationArticle(WireModel):
    slug: str
    title: str


class NotificationComment(WireModel):
    id: int
    body: str


class NotificationRead(WireModel):
    """One notification; `article` and `comment` are null for the kinds they do not concern."""

    id: int
    kind: Kind
    created_at: Timestamp
    read: bool
    actor: ProfileRead
    article: NotificationArticle | None
    comment: NotificationComment | None


class NotificationList(WireModel):
    notifications: list[NotificationRead]
    notifications_count: int
    unread_count: int


class NotificationEnvelope(WireModel):
    notification: NotificationRead


class UnreadCount(WireModel):
    unread_count: int


# JSON numbers only: an id sent as a string is a client bug worth reporting.
NotificationId = Annotated[int, Strict(), Field(ge=1, le=MAX_NOTIFICATION_ID)]


class MarkRead(InputModel):
    """Either `ids` (the caller's notifications among them are marked) or `all: true`."""

    ids: list[NotificationId] | None = Field(default=None, max_length=MAX_IDS_PER_REQUEST)
    all: Annotated[bool, Strict()] | None = None

    @field_validator("ids")
    @classmethod
    def _not_empty(cls, ids: list[int] | None) -> list[int] | None:
        if ids is not None and not ids:
            raise ValueError("can't be blank")
        return ids

    @model_validator(mode="after")
    def _one_of(self) -> "MarkRead":
        if self.ids is not None and self.all is not None:
            raise ValueError("must give either ids or all, not both")
        if self.ids is None and self.all is not True:
            raise ValueError("must give the ids to mark read, or all: true")
        return self


class MarkReadEnvelope(InputModel):
    notifications: MarkRead

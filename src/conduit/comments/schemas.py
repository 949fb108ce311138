from typing import Annotated

from pydantic import StringConstraints

from conduit.platform.schemas import InputModel, Storable, Timestamp, WireModel
from conduit.profiles.schemas import ProfileRead

COMMENT_MAX_LENGTH = 10_000


class NewComment(InputModel):
    body: Annotated[
        str,
        StringConstraints(strip_whitespace=True, min_length=1, max_length=COMMENT_MAX_LENGTH),
        Storable,
    ]


class NewCommentEnvelope(InputModel):
    comment: NewComment


class CommentRead(WireModel):
    id: int
    created_at: Timestamp
    updated_at: Timestamp
    body: str
    author: ProfileRead


class CommentEnvelope(WireModel):
    comment: CommentRead


class CommentList(WireModel):
    comments: list[CommentRead]

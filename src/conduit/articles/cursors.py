"""Opaque cursors for keyset pagination of the article lists and the feed.

A cursor names the last article of a page by its place in the list's order, so the next page
is an index range scan that starts there: page 1,000 costs what page 1 costs, and articles
published meanwhile neither shift the pages nor show twice. Clients treat cursors as opaque;
they are base64url-encoded JSON so that a bad one can be refused with a clear 422.
"""

import base64
import binascii
import json
import math
from dataclasses import dataclass
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError

from conduit.platform.errors import ValidationFailed

MAX_CURSOR_LENGTH = 200
_MAX_ID = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Position:
    """The last article of a page: lists run newest first (`created_at`, then `id`), searches
    by `rank` first."""

    created_at: datetime
    article_id: int
    rank: float | None = None


class _Payload(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    c: AwareDatetime
    i: int = Field(ge=1, le=_MAX_ID, strict=True)
    r: float | None = None


class InvalidCursor(ValidationFailed):
    field = "cursor"
    message = "is invalid; use the nextCursor of a previous page of the same list"


def encode(position: Position) -> str:
    payload: dict[str, object] = {"c": position.created_at.isoformat(), "i": position.article_id}
    if position.rank is not None:
        payload["r"] = position.rank
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode(cursor: str, *, ranked: bool) -> Position:
    """The position in `cursor`; `ranked` says whether it must come from a search."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = _Payload.model_validate_json(raw)
    except (ValueError, binascii.Error, ValidationError):
        raise InvalidCursor() from None
    if (payload.r is not None) != ranked or (
        payload.r is not None and not math.isfinite(payload.r)
    ):
        raise InvalidCursor()
    return Position(created_at=payload.c, article_id=payload.i, rank=payload.r)

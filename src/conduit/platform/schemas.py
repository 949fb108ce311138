"""Wire-format conventions shared by every RealWorld payload.

camelCase field names, UTC timestamps with milliseconds and a `Z`, and text that PostgreSQL can
store (no NUL characters, no unpaired surrogates).
"""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, PlainSerializer
from pydantic.alias_generators import to_camel


def ensure_storable_text(value: str) -> str:
    """`value` unchanged, or ValueError when PostgreSQL could not store it."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid UTF-8 text") from None
    return value


def format_timestamp(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Add last in an Annotated type, after any StringConstraints, so that whitespace is stripped and
# lengths are checked first: Annotated[str, StringConstraints(max_length=10), Storable].
Storable = AfterValidator(ensure_storable_text)
Text = Annotated[str, Storable]
Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class WireModel(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        from_attributes=True,
        serialize_by_alias=True,
    )


class InputModel(BaseModel):
    """Request bodies: strict about types (no number-to-string coercion), lenient about extras."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, str_strip_whitespace=False
    )

import uuid
from typing import Annotated, Any
from urllib.parse import urlsplit

import httpx
from pydantic import AfterValidator, Field, StringConstraints

from conduit.platform.jobs.registry import EVENT_TYPES
from conduit.platform.schemas import InputModel, Storable, Timestamp, WireModel
from conduit.webhooks.models import DeliveryStatus

URL_MAX_LENGTH = 2_048
# Room for every event type named a few times over; duplicates are dropped.
EVENTS_MAX_ITEMS = 100


def _webhook_url(value: str) -> str:
    """A URL a delivery can be POSTed to. Where it points is checked by the service, which
    resolves the host (see `service.check_destination`)."""
    if any(character.isspace() or not character.isprintable() for character in value):
        raise ValueError("is not a valid URL")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise ValueError("is not a valid URL") from None
    if parts.scheme.lower() not in {"http", "https"}:
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must name a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not contain credentials")
    if port == 0:
        raise ValueError("has an invalid port")
    try:
        httpx.URL(value)
    except (httpx.InvalidURL, UnicodeError):
        raise ValueError("is not a valid URL") from None
    return value


def _known_event_types(values: list[str]) -> list[str]:
    unknown = sorted(set(values) - EVENT_TYPES)
    if unknown:
        raise ValueError(
            f"has unknown event types: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(EVENT_TYPES))})"
        )
    if not values:
        raise ValueError("must name at least one event type")
    return sorted(set(values))


WebhookUrl = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=URL_MAX_LENGTH),
    Storable,
    AfterValidator(_webhook_url),
]
EventTypes = Annotated[
    list[Annotated[str, StringConstraints(max_length=64)]],
    Field(max_length=EVENTS_MAX_ITEMS),
    AfterValidator(_known_event_types),
]


class NewWebhook(InputModel):
    url: WebhookUrl
    events: EventTypes = Field(
        description="Event types to receive: a non-empty subset of the types listed in the API "
        "description"
    )
    active: bool = True


class UpdateWebhook(InputModel):
    """Only the fields present change; `null` means unchanged."""

    url: WebhookUrl | None = None
    events: EventTypes | None = None
    active: bool | None = None


class NewWebhookEnvelope(InputModel):
    webhook: NewWebhook


class UpdateWebhookEnvelope(InputModel):
    webhook: UpdateWebhook


class WebhookRead(WireModel):
    id: int
    url: str
    events: list[str]
    active: bool
    created_at: Timestamp
    updated_at: Timestamp


class WebhookWithSecret(WebhookRead):
    secret: str = Field(
        description="The signing secret. Shown only in this response: store it now."
    )


class WebhookEnvelope(WireModel):
    webhook: WebhookRead


class WebhookWithSecretEnvelope(WireModel):
    webhook: WebhookWithSecret


class WebhookList(WireModel):
    webhooks: list[WebhookRead]


class DeliveryRead(WireModel):
    id: int = Field(description="Also sent as `Webhook-Id`, the same on every attempt")
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    attempts: int
    last_error: str | None
    last_response_status: int | None
    next_attempt_at: Timestamp | None
    delivered_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


class DeliveryDetail(DeliveryRead):
    payload: dict[str, Any] = Field(description="The JSON body sent")


class DeliveryEnvelope(WireModel):
    delivery: DeliveryRead


class DeliveryDetailEnvelope(WireModel):
    delivery: DeliveryDetail


class DeliveryList(WireModel):
    deliveries: list[DeliveryRead]
    deliveries_count: int

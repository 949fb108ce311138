from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response, status

from conduit.platform.db.session import AutoCommitRoute, SessionDep
from conduit.platform.errors import ValidationFailed
from conduit.platform.jobs.registry import EVENT_TYPES
from conduit.platform.settings import Settings
from conduit.users.dependencies import CurrentUser
from conduit.webhooks import service
from conduit.webhooks.models import WebhookEndpoint
from conduit.webhooks.schemas import (
    DeliveryDetailEnvelope,
    DeliveryEnvelope,
    DeliveryList,
    DeliveryRead,
    NewWebhookEnvelope,
    UpdateWebhookEnvelope,
    WebhookEnvelope,
    WebhookList,
    WebhookWithSecretEnvelope,
)

router = APIRouter(prefix="/webhooks", tags=["Webhooks"], route_class=AutoCommitRoute)

MAX_ID = 2**63 - 1
MAX_OFFSET = 2**31 - 1

DELIVERY_DESCRIPTION = f"""
Register an HTTPS (or HTTP) endpoint to be told about events as they happen. Each event is
POSTed as JSON: `{{"id": "<event id>", "type": "article.published", "occurredAt":
"<ISO 8601>", "data": {{...}}}}`, where `data` holds public facts only (slugs, titles,
usernames, comment ids and bodies).

**Events** (`events`, a non-empty subset): {", ".join(f"`{name}`" for name in sorted(EVENT_TYPES))}.
An ordinary user's endpoint receives the events about their own articles (including favorites
of and comments on them) and about being followed; an admin's endpoint receives every event.

**Headers** of every delivery:

- `Webhook-Id`: the delivery id, the same on every retry and redelivery; dedupe by it.
- `Webhook-Timestamp`: Unix seconds when the attempt was signed.
- `Webhook-Signature`: `v1=` followed by the hex HMAC-SHA256, keyed with the endpoint's secret
  (its UTF-8 bytes), of `"{{Webhook-Timestamp}}.{{raw body}}"`. Compare in constant time and
  refuse timestamps more than a few minutes old.
- `Webhook-Event`: the event type.

The secret is returned once, in the response that creates the endpoint (or rotates its
secret). Any 2xx answer within the timeout counts as delivered; anything else is retried with
exponential backoff and jitter, then marked failed. Redirects are not followed.
"""


def _limit(request: Request, limit: int) -> int:
    maximum: int = request.app.state.settings.max_page_size
    if limit > maximum:
        raise ValidationFailed(f"must be less than or equal to {maximum}", field="limit")
    return limit


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


AppSettings = Annotated[Settings, Depends(_settings)]
WebhookId = Annotated[int, Path(ge=1, le=MAX_ID, description="ID of the webhook endpoint")]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID, description="ID of the delivery")]
Limit = Annotated[
    int, Query(ge=1, description="Number of deliveries to return (at most MAX_PAGE_SIZE)")
]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Number of deliveries to skip")]


async def _owned_endpoint(
    webhook_id: WebhookId, session: SessionDep, user: CurrentUser
) -> WebhookEndpoint:
    return await service.get(session, owner=user, webhook_id=webhook_id)


OwnedEndpoint = Annotated[WebhookEndpoint, Depends(_owned_endpoint)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    summary="Register a webhook endpoint",
    description=DELIVERY_DESCRIPTION,
)
async def create_webhook(
    body: NewWebhookEnvelope, session: SessionDep, user: CurrentUser, settings: AppSettings
) -> WebhookWithSecretEnvelope:
    # No Idempotency-Key here: a replayed response would keep a copy of the secret.
    endpoint = await service.create(session, owner=user, new=body.webhook, settings=settings)
    return WebhookWithSecretEnvelope(webhook=service.to_read_with_secret(endpoint))


@router.get("", summary="List your webhook endpoints")
async def list_webhooks(session: SessionDep, user: CurrentUser) -> WebhookList:
    endpoints = await service.list_for(session, owner=user)
    return WebhookList(webhooks=[service.to_read(endpoint) for endpoint in endpoints])


@router.get("/{webhook_id}", summary="Get a webhook endpoint")
async def get_webhook(endpoint: OwnedEndpoint) -> WebhookEnvelope:
    return WebhookEnvelope(webhook=service.to_read(endpoint))


@router.put("/{webhook_id}", summary="Change a webhook endpoint's URL, events or active flag")
async def update_webhook(
    body: UpdateWebhookEnvelope, endpoint: OwnedEndpoint, session: SessionDep, settings: AppSettings
) -> WebhookEnvelope:
    changes = body.webhook
    if all(getattr(changes, name) is None for name in changes.model_fields_set):
        raise ValidationFailed("must change at least one field", field="webhook")
    endpoint = await service.update_endpoint(
        session, endpoint=endpoint, changes=changes, settings=settings
    )
    return WebhookEnvelope(webhook=service.to_read(endpoint))


@router.delete(
    "/{webhook_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook endpoint and its delivery log",
)
async def delete_webhook(endpoint: OwnedEndpoint, session: SessionDep) -> None:
    await service.delete(session, endpoint=endpoint)


@router.post(
    "/{webhook_id}/rotate-secret",
    summary="Replace the signing secret (the new one is shown once)",
)
async def rotate_secret(endpoint: OwnedEndpoint, session: SessionDep) -> WebhookWithSecretEnvelope:
    endpoint = await service.rotate_secret(session, endpoint=endpoint)
    return WebhookWithSecretEnvelope(webhook=service.to_read_with_secret(endpoint))


@router.get("/{webhook_id}/deliveries", summary="The endpoint's delivery log, newest first")
async def list_deliveries(
    request: Request,
    endpoint: OwnedEndpoint,
    session: SessionDep,
    limit: Limit = 20,
    offset: Offset = 0,
) -> DeliveryList:
    return await service.deliveries(
        session, endpoint=endpoint, limit=_limit(request, limit), offset=offset
    )


@router.get("/{webhook_id}/deliveries/{delivery_id}", summary="One delivery, with the payload sent")
async def get_delivery(
    endpoint: OwnedEndpoint, delivery_id: DeliveryId, session: SessionDep
) -> DeliveryDetailEnvelope:
    detail = await service.delivery_detail(session, endpoint=endpoint, delivery_id=delivery_id)
    return DeliveryDetailEnvelope(delivery=detail)


@router.post(
    "/{webhook_id}/deliveries/{delivery_id}/redeliver",
    status_code=status.HTTP_202_ACCEPTED,
    summary="Send a delivery again now, with a fresh set of attempts",
)
async def redeliver(
    endpoint: OwnedEndpoint, delivery_id: DeliveryId, session: SessionDep
) -> DeliveryEnvelope:
    delivery = await service.redeliver(session, endpoint=endpoint, delivery_id=delivery_id)
    return DeliveryEnvelope(delivery=DeliveryRead.model_validate(delivery))

"""Webhook endpoints and their delivery log, as their owners manage them.

An endpoint belongs to the user who registered it and to nobody else: every read and change
looks it up by id AND owner, and answers 404 for anyone else's, so ids reveal nothing about
other users' endpoints (a 403 would confirm that the id exists).
"""

import json
from collections.abc import Sequence
from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import ColumnElement, exists, func, or_, select, update
from sqlalchemy import delete as sql_delete
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.errors import ConduitError, NotFound, ValidationFailed
from conduit.platform.http import (
    RESOLVE_TIMEOUT_SECONDS,
    AddressNotAllowed,
    HostNotResolved,
    resolve_allowed_addresses,
)
from conduit.platform.jobs.queue import enqueue
from conduit.platform.settings import Settings
from conduit.users.models import Role, User
from conduit.webhooks import signing
from conduit.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint
from conduit.webhooks.schemas import (
    DeliveryDetail,
    DeliveryList,
    DeliveryRead,
    NewWebhook,
    UpdateWebhook,
    WebhookRead,
    WebhookWithSecret,
)

MAX_ENDPOINTS_PER_USER = 20
DELIVER_JOB = "webhooks.deliver"
DISALLOWED_ADDRESS_MESSAGE = (
    "must not point to a loopback, private, link-local, multicast, reserved or unspecified address"
)


class WebhookNotFound(NotFound):
    field = "webhook"


class DeliveryNotFound(NotFound):
    field = "delivery"


class EndpointInactive(ConduitError):
    status_code = 409
    field = "webhook"
    message = "is inactive; activate it before redelivering"


def to_read(endpoint: WebhookEndpoint) -> WebhookRead:
    return WebhookRead(
        id=endpoint.id,
        url=endpoint.url,
        events=list(endpoint.event_types),
        active=endpoint.active,
        created_at=endpoint.created_at,
        updated_at=endpoint.updated_at,
    )


def to_read_with_secret(endpoint: WebhookEndpoint) -> WebhookWithSecret:
    return WebhookWithSecret(**dict(to_read(endpoint)), secret=endpoint.secret)


async def check_destination(url: str, *, settings: Settings) -> None:
    """Refuse a URL whose host resolves to an address deliveries must not reach (422).

    Deliveries check again when they connect, since DNS answers can change after this.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    try:
        await resolve_allowed_addresses(
            host,
            port,
            allow_private=settings.webhooks_allow_private_addresses,
            resolve_seconds=min(RESOLVE_TIMEOUT_SECONDS, settings.webhook_timeout_seconds),
        )
    except AddressNotAllowed:
        raise ValidationFailed(DISALLOWED_ADDRESS_MESSAGE, field="url") from None
    except HostNotResolved:
        raise ValidationFailed("has a host that could not be resolved", field="url") from None


async def create(
    session: AsyncSession, *, owner: User, new: NewWebhook, settings: Settings
) -> WebhookEndpoint:
    await check_destination(new.url, settings=settings)
    # Serialises this user's concurrent registrations, so that the limit holds.
    await session.execute(
        select(User.id).where(User.id == owner.id).with_for_update(key_share=True)
    )
    count = await session.scalar(
        select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.user_id == owner.id)
    )
    if (count or 0) >= MAX_ENDPOINTS_PER_USER:
        raise ValidationFailed(
            f"limit reached: at most {MAX_ENDPOINTS_PER_USER} endpoints per user", field="webhook"
        )
    endpoint = WebhookEndpoint(
        user_id=owner.id,
        url=new.url,
        event_types=new.events,
        active=new.active,
        secret=signing.generate_secret(),
    )
    session.add(endpoint)
    await session.flush()
    await session.refresh(endpoint, ["created_at", "updated_at"])
    return endpoint


async def list_for(session: AsyncSession, *, owner: User) -> list[WebhookEndpoint]:
    """Newest first."""
    result = await session.scalars(
        select(WebhookEndpoint)
        .where(WebhookEndpoint.user_id == owner.id)
        .order_by(WebhookEndpoint.created_at.desc(), WebhookEndpoint.id.desc())
    )
    return list(result)


async def get(session: AsyncSession, *, owner: User, webhook_id: int) -> WebhookEndpoint:
    endpoint = await session.scalar(
        select(WebhookEndpoint).where(
            WebhookEndpoint.id == webhook_id, WebhookEndpoint.user_id == owner.id
        )
    )
    if endpoint is None:
        raise WebhookNotFound()
    return endpoint


async def update_endpoint(
    session: AsyncSession, *, endpoint: WebhookEndpoint, changes: UpdateWebhook, settings: Settings
) -> WebhookEndpoint:
    if changes.url is not None:
        await check_destination(changes.url, settings=settings)
        endpoint.url = changes.url
    if changes.events is not None:
        endpoint.event_types = changes.events
    if changes.active is not None:
        endpoint.active = changes.active
    endpoint.updated_at = func.now()
    await session.flush()
    await session.refresh(endpoint, ["updated_at"])
    return endpoint


async def delete(session: AsyncSession, *, endpoint: WebhookEndpoint) -> None:
    """Delete the endpoint and its delivery log; jobs still queued for it find nothing to do."""
    await session.execute(
        sql_delete(WebhookEndpoint)
        .where(WebhookEndpoint.id == endpoint.id)
        .execution_options(synchronize_session=False)
    )


async def rotate_secret(session: AsyncSession, *, endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """A new secret, effective at once: every attempt from now on, retries of older
    deliveries included, is signed with it."""
    endpoint.secret = signing.generate_secret()
    endpoint.updated_at = func.now()
    await session.flush()
    await session.refresh(endpoint, ["updated_at"])
    return endpoint


async def deliveries(
    session: AsyncSession, *, endpoint: WebhookEndpoint, limit: int, offset: int
) -> DeliveryList:
    """The endpoint's delivery log, newest first."""
    total = await session.scalar(
        select(func.count())
        .select_from(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
    )
    rows = await session.scalars(
        select(WebhookDelivery)
        .where(WebhookDelivery.endpoint_id == endpoint.id)
        .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id.desc())
        .limit(limit)
        .offset(offset)
    )
    return DeliveryList(
        deliveries=[DeliveryRead.model_validate(row) for row in rows], deliveries_count=total or 0
    )


async def _delivery(
    session: AsyncSession, *, endpoint: WebhookEndpoint, delivery_id: int
) -> WebhookDelivery:
    delivery = await session.scalar(
        select(WebhookDelivery).where(
            WebhookDelivery.id == delivery_id, WebhookDelivery.endpoint_id == endpoint.id
        )
    )
    if delivery is None:
        raise DeliveryNotFound()
    return delivery


async def delivery_detail(
    session: AsyncSession, *, endpoint: WebhookEndpoint, delivery_id: int
) -> DeliveryDetail:
    delivery = await _delivery(session, endpoint=endpoint, delivery_id=delivery_id)
    read = DeliveryRead.model_validate(delivery)
    return DeliveryDetail(**dict(read), payload=json.loads(delivery.body))


async def schedule_delivery(
    session: AsyncSession, *, delivery_id: int, schedule: int, delay_seconds: float = 0.0
) -> None:
    """Queue the attempt numbered `schedule` of a delivery (see `WebhookDelivery`)."""
    await enqueue(
        session,
        DELIVER_JOB,
        {"delivery_id": delivery_id, "schedule": schedule},
        delay=timedelta(seconds=delay_seconds) if delay_seconds > 0 else None,
        dedupe_key=f"{DELIVER_JOB}:{delivery_id}:{schedule}",
    )


async def redeliver(
    session: AsyncSession, *, endpoint: WebhookEndpoint, delivery_id: int
) -> WebhookDelivery:
    """Send the delivery again, now, with a fresh set of attempts. It keeps its id (the
    `Webhook-Id` receivers dedupe by) and its body; any attempt already queued is superseded."""
    delivery = await _delivery(session, endpoint=endpoint, delivery_id=delivery_id)
    if not endpoint.active:
        raise EndpointInactive()
    schedule = await session.scalar(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(
            status=DeliveryStatus.pending,
            attempts=0,
            schedule=WebhookDelivery.schedule + 1,
            next_attempt_at=func.now(),
            updated_at=func.now(),
        )
        .returning(WebhookDelivery.schedule)
        .execution_options(synchronize_session=False)
    )
    if schedule is None:
        # Deleted with its endpoint since it was read.
        raise DeliveryNotFound()
    await schedule_delivery(session, delivery_id=delivery.id, schedule=schedule)
    await session.refresh(delivery)
    return delivery


def any_endpoint_receives(event_type: str) -> ColumnElement[bool]:
    """Whether any active endpoint takes `event_type` at all, whoever it belongs to: the cheap
    question a write asks, in the statement recording its event, before queueing the fan-out."""
    return exists().where(
        WebhookEndpoint.active, WebhookEndpoint.event_types.contains([event_type])
    )


async def endpoints_for_event(
    session: AsyncSession, *, event_type: str, concerned_user_ids: Sequence[int]
) -> list[int]:
    """Active endpoints that receive `event_type`: those of the concerned users, and every
    admin's. Suspended accounts receive nothing."""
    result = await session.scalars(
        select(WebhookEndpoint.id)
        .join(User, User.id == WebhookEndpoint.user_id)
        .where(
            WebhookEndpoint.active,
            WebhookEndpoint.event_types.contains([event_type]),
            User.suspended_at.is_(None),
            or_(User.id.in_(list(concerned_user_ids)), User.role == Role.admin),
        )
        .order_by(WebhookEndpoint.id)
    )
    return list(result)

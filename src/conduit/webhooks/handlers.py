"""The webhook jobs: fan each event out to the endpoints it concerns, attempt deliveries,
and prune the delivery log."""

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import delete, func
from sqlalchemy.dialects.postgresql import insert

from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.registry import EVENT_TYPES, Event, every, job, subscribe
from conduit.webhooks import breaker, delivery, payloads, service
from conduit.webhooks.models import DeliveryStatus, WebhookDelivery

logger = structlog.stdlib.get_logger(__name__)

# Finished deliveries stay in the log this long.
DELIVERY_RETENTION = timedelta(days=30)
# A destination's failures are forgotten after this long without a delivery to it.
DESTINATION_IDLE = timedelta(days=1)


@subscribe("webhooks.fan_out", *sorted(EVENT_TYPES), audience=service.any_endpoint_receives)
async def fan_out(context: JobContext, event: Event) -> None:
    """One delivery per matching active endpoint, and a job to attempt it.

    A delivery is unique per (endpoint, event): should this handler ever see the event twice,
    the second pass creates and queues nothing. Events that no active endpoint receives when
    they happen are not queued for it at all.
    """
    session = context.session
    concerned = await payloads.concerned_user_ids(session, event)
    endpoint_ids = await service.endpoints_for_event(
        session, event_type=event.type, concerned_user_ids=sorted(concerned)
    )
    if not endpoint_ids:
        return
    body = await payloads.build_body(session, event)
    rows: list[dict[str, Any]] = [
        {
            "endpoint_id": endpoint_id,
            "event_id": event.id,
            "event_type": event.type,
            "body": body,
            "status": DeliveryStatus.pending,
            "attempts": 0,
            "schedule": 0,
            "next_attempt_at": event.occurred_at,
        }
        for endpoint_id in endpoint_ids
    ]
    created = await session.scalars(
        insert(WebhookDelivery)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["endpoint_id", "event_id"])
        .returning(WebhookDelivery.id)
    )
    delivery_ids = list(created)
    for delivery_id in delivery_ids:
        await service.schedule_delivery(session, delivery_id=delivery_id, schedule=0)
    logger.info(
        "event fanned out to webhooks",
        event_id=str(event.id),
        event_type=event.type,
        deliveries=len(delivery_ids),
    )


@job(service.DELIVER_JOB)
async def deliver(context: JobContext, payload: dict[str, Any]) -> None:
    await delivery.attempt(
        context, delivery_id=int(payload["delivery_id"]), schedule=int(payload["schedule"])
    )


@every("webhooks.prune", "17 4 * * *")
async def prune(context: JobContext) -> None:
    """Forget finished deliveries after DELIVERY_RETENTION and idle destinations' failures."""
    await context.session.execute(
        delete(WebhookDelivery).where(
            WebhookDelivery.status != DeliveryStatus.pending,
            WebhookDelivery.created_at < func.now() - DELIVERY_RETENTION,
        )
    )
    await breaker.forget_idle(context.session, older_than=DESTINATION_IDLE)

"""One attempt at a delivery, and what it leaves in the delivery log.

The delivery row holds the state machine; the queue only schedules. An attempt:

1. does nothing unless the delivery is pending and the job is its current one (`schedule`);
2. fails the delivery without sending when its endpoint was deactivated;
3. asks the destination's circuit breaker; while it is open the delivery is postponed to when
   it half-opens, attempts untouched;
4. POSTs the signed body once, bounded by WEBHOOK_TIMEOUT_SECONDS overall (no retry inside
   the job: a dead endpoint must not hold a worker);
5. records the outcome: delivered; or the error, and either the next attempt (exponential
   backoff with jitter) or, after WEBHOOK_MAX_ATTEMPTS, failed. An address the SSRF guard
   refuses fails the delivery at once.

Nothing here raises for a failed delivery: only an unexpected error (the database) leaves the
job to the queue's own retries.
"""

import asyncio
import random
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import structlog
from sqlalchemy import DateTime, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.http import AddressNotAllowed, HostNotResolved
from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.runner import retry_delay
from conduit.webhooks import breaker, service, signing
from conduit.webhooks.models import DeliveryStatus, WebhookDelivery, WebhookEndpoint

logger = structlog.stdlib.get_logger(__name__)

ERROR_MAX_LENGTH = 500


@dataclass(frozen=True)
class Outcome:
    delivered: bool
    error: str | None = None
    response_status: int | None = None
    # The destination misbehaved (unreachable, too slow, 5xx, 429): counts for its breaker.
    destination_failed: bool = False
    # Refused before sending; retrying cannot help.
    refused: bool = False


def headers_for(*, secret: str, delivery_id: int, event_type: str, body: bytes) -> dict[str, str]:
    timestamp = int(time.time())
    return {
        "Content-Type": "application/json",
        "Webhook-Id": str(delivery_id),
        "Webhook-Timestamp": str(timestamp),
        "Webhook-Signature": signing.signature(secret, timestamp, body),
        "Webhook-Event": event_type,
    }


async def send(
    http: httpx.AsyncClient,
    *,
    url: str,
    headers: dict[str, str],
    body: bytes,
    timeout_seconds: float,
) -> Outcome:
    """POST once; never raises for anything the destination or the network does."""
    try:
        async with asyncio.timeout(timeout_seconds):
            # Streamed and never read: only the status matters, and a large or endless answer
            # must cost nothing.
            async with http.stream("POST", url, content=body, headers=headers) as response:
                status = response.status_code
    except AddressNotAllowed:
        return Outcome(
            delivered=False,
            refused=True,
            error="not sent: the host resolves to an address deliveries must not reach",
        )
    except HostNotResolved as error:
        return Outcome(delivered=False, destination_failed=True, error=str(error))
    except (TimeoutError, httpx.TimeoutException):
        return Outcome(
            delivered=False,
            destination_failed=True,
            error=f"timed out after {timeout_seconds:g} s",
        )
    except httpx.HTTPError as error:
        detail = str(error) or type(error).__name__
        return Outcome(
            delivered=False,
            destination_failed=True,
            error=f"{type(error).__name__}: {detail}"[:ERROR_MAX_LENGTH],
        )
    except Exception as error:
        # Whatever else the client raises, the delivery log must say so rather than the job
        # failing over and over with the delivery left pending.
        logger.exception("delivery raised unexpectedly")
        return Outcome(delivered=False, error=f"not sent: {type(error).__name__}")
    if 200 <= status < 300:
        return Outcome(delivered=True, response_status=status)
    return Outcome(
        delivered=False,
        response_status=status,
        error=f"HTTP {status}",
        destination_failed=status >= 500 or status == 429,
    )


def _clock() -> Any:
    return func.clock_timestamp(type_=DateTime(timezone=True))


async def _record(session: AsyncSession, delivery: WebhookDelivery, **values: Any) -> bool:
    """Update the delivery if the job is still its current one; False if it was superseded
    (redelivered, or deleted with its endpoint) meanwhile."""
    updated = await session.scalar(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.id == delivery.id,
            WebhookDelivery.schedule == delivery.schedule,
            WebhookDelivery.status == DeliveryStatus.pending,
        )
        .values(updated_at=_clock(), **values)
        .returning(WebhookDelivery.id)
        .execution_options(synchronize_session=False)
    )
    return updated is not None


async def _postpone(
    session: AsyncSession, delivery: WebhookDelivery, *, wait_seconds: float, reason: str
) -> None:
    if await _record(
        session,
        delivery,
        schedule=delivery.schedule + 1,
        next_attempt_at=func.now() + timedelta(seconds=wait_seconds),
        last_error=reason,
    ):
        await service.schedule_delivery(
            session,
            delivery_id=delivery.id,
            schedule=delivery.schedule + 1,
            delay_seconds=wait_seconds,
        )


async def _fail(session: AsyncSession, delivery: WebhookDelivery, error: str) -> None:
    await _record(
        session,
        delivery,
        status=DeliveryStatus.failed,
        attempts=delivery.attempts + 1,
        last_error=error,
        next_attempt_at=None,
    )


async def attempt(context: JobContext, *, delivery_id: int, schedule: int) -> None:
    session = context.session
    settings = context.settings
    found = (
        await session.execute(
            select(WebhookDelivery, WebhookEndpoint)
            .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
            .where(WebhookDelivery.id == delivery_id)
            # The row as it is now, even if this session loaded it before.
            .execution_options(populate_existing=True)
        )
    ).one_or_none()
    if found is None:
        logger.info("delivery gone with its endpoint", delivery_id=delivery_id)
        return
    delivery, endpoint = found
    if delivery.status is not DeliveryStatus.pending or delivery.schedule != schedule:
        logger.info("delivery job superseded", delivery_id=delivery_id, schedule=schedule)
        return
    log = logger.bind(
        delivery_id=delivery.id, webhook_id=endpoint.id, attempt=delivery.attempts + 1
    )
    if not endpoint.active:
        await _record(
            session,
            delivery,
            status=DeliveryStatus.failed,
            last_error="not sent: the endpoint is inactive",
            next_attempt_at=None,
        )
        return

    destination = breaker.destination_of(endpoint.url)
    passage = await breaker.enter(
        session, destination, open_seconds=settings.webhook_breaker_open_seconds
    )
    if not passage.allowed:
        # Spread the postponed deliveries so that they do not all return at the same instant.
        spread = random.uniform(0, min(5.0, settings.webhook_breaker_open_seconds / 10))  # noqa: S311
        await _postpone(
            session,
            delivery,
            wait_seconds=passage.wait_seconds + spread,
            reason=f"not sent: {destination} is failing, deliveries to it are paused",
        )
        log.info("delivery postponed: circuit open", destination=destination)
        return

    body = delivery.body.encode()
    outcome = await send(
        context.resources.http,
        url=endpoint.url,
        headers=headers_for(
            secret=endpoint.secret,
            delivery_id=delivery.id,
            event_type=delivery.event_type,
            body=body,
        ),
        body=body,
        timeout_seconds=settings.webhook_timeout_seconds,
    )
    if outcome.refused:
        log.warning("delivery refused: disallowed address", destination=destination)
        await _fail(session, delivery, outcome.error or "refused")
        return
    if outcome.destination_failed:
        await breaker.record_failure(
            session,
            destination,
            threshold=settings.webhook_breaker_failures,
            open_seconds=settings.webhook_breaker_open_seconds,
        )
    else:
        await breaker.record_success(session, destination)

    attempts = delivery.attempts + 1
    if outcome.delivered:
        await _record(
            session,
            delivery,
            status=DeliveryStatus.delivered,
            attempts=attempts,
            last_response_status=outcome.response_status,
            next_attempt_at=None,
            delivered_at=_clock(),
        )
        log.info("delivered", status=outcome.response_status)
        return
    if attempts >= settings.webhook_max_attempts:
        await _record(
            session,
            delivery,
            status=DeliveryStatus.failed,
            attempts=attempts,
            last_error=outcome.error,
            last_response_status=outcome.response_status,
            next_attempt_at=None,
        )
        log.warning("delivery failed its last attempt", error=outcome.error)
        return
    delay = retry_delay(
        attempts,
        base_seconds=settings.job_retry_base_seconds,
        max_seconds=settings.job_retry_max_seconds,
    )
    if await _record(
        session,
        delivery,
        attempts=attempts,
        schedule=delivery.schedule + 1,
        last_error=outcome.error,
        last_response_status=outcome.response_status,
        next_attempt_at=func.now() + delay,
    ):
        await service.schedule_delivery(
            session,
            delivery_id=delivery.id,
            schedule=delivery.schedule + 1,
            delay_seconds=delay.total_seconds(),
        )
    log.info(
        "delivery failed; will retry",
        error=outcome.error,
        retry_in_seconds=round(delay.total_seconds(), 3),
    )

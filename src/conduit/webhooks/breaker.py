"""A circuit breaker per destination (`host:port`), kept in PostgreSQL.

Every worker process, in-process or `conduit worker`, embedded database or not, sees the same
state, because it is a row of `webhook_destination` updated by single atomic statements; no
Redis is needed, and the state changes commit or roll back with the delivery they come from.

- closed (no row, or fewer than WEBHOOK_BREAKER_FAILURES consecutive failures): deliveries go.
- open (`opened_until` in the future): deliveries do not touch the network; they are postponed
  to when the circuit half-opens, without using an attempt.
- half-open (`opened_until` passed): the first delivery to claim the row (`FOR UPDATE SKIP
  LOCKED`, so nobody waits for it) re-arms `opened_until` and probes; the others are postponed.
  The probe's success deletes the row (closed); its failure opens the circuit again.

Times come from `clock_timestamp()`, not `now()`: a delivery's transaction began before its
request, possibly seconds ago. Waits are measured from `now()`, as the queue measures delays.
"""

from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlsplit

import structlog
from sqlalchemy import ColumnElement, DateTime, case, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.webhooks.models import WebhookDestination

logger = structlog.stdlib.get_logger(__name__)

_DEFAULT_PORTS = {"http": 80, "https": 443}


def destination_of(url: str) -> str:
    """`host:port` of a URL, the unit the breaker counts failures by."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or _DEFAULT_PORTS.get(parts.scheme.lower(), 0)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _clock() -> ColumnElement[datetime]:
    return func.clock_timestamp(type_=DateTime(timezone=True))


@dataclass(frozen=True)
class Passage:
    allowed: bool
    # When not allowed: seconds from the transaction's `now()` until the circuit half-opens.
    wait_seconds: float = 0.0
    # Allowed as the half-open probe.
    probe: bool = False


async def enter(session: AsyncSession, destination: str, *, open_seconds: float) -> Passage:
    """May a delivery to `destination` go now?"""
    state = (
        await session.execute(
            select(
                WebhookDestination.opened_until,
                WebhookDestination.opened_until > _clock(),
                func.extract("epoch", WebhookDestination.opened_until - func.now()),
            ).where(WebhookDestination.destination == destination)
        )
    ).one_or_none()
    if state is None or state[0] is None:
        return Passage(allowed=True)
    _, is_open, seconds_left = state
    if is_open:
        return Passage(allowed=False, wait_seconds=max(0.0, float(seconds_left)))
    claimable = (
        select(WebhookDestination.destination)
        .where(
            WebhookDestination.destination == destination,
            WebhookDestination.opened_until <= _clock(),
        )
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    claimed = await session.scalar(
        update(WebhookDestination)
        .where(WebhookDestination.destination == claimable)
        .values(opened_until=_clock() + timedelta(seconds=open_seconds), updated_at=_clock())
        .returning(WebhookDestination.destination)
        .execution_options(synchronize_session=False)
    )
    if claimed is None:
        # Another delivery is probing (or just did): wait for a full period.
        return Passage(allowed=False, wait_seconds=open_seconds)
    logger.info("circuit half-open: probing", destination=destination)
    return Passage(allowed=True, probe=True)


async def record_failure(
    session: AsyncSession, destination: str, *, threshold: int, open_seconds: float
) -> datetime | None:
    """Count a failure; the circuit opens at `threshold` consecutive ones. Returns when it is
    open until, if it is open now."""
    reopen_at = _clock() + timedelta(seconds=open_seconds)
    failures = WebhookDestination.consecutive_failures + 1
    statement = insert(WebhookDestination).values(
        destination=destination,
        consecutive_failures=1,
        opened_until=reopen_at if threshold <= 1 else None,
        updated_at=_clock(),
    )
    upsert = statement.on_conflict_do_update(
        index_elements=[WebhookDestination.destination],
        set_={
            "consecutive_failures": failures,
            "opened_until": case(
                (failures >= threshold, reopen_at), else_=WebhookDestination.opened_until
            ),
            "updated_at": _clock(),
        },
    ).returning(WebhookDestination.consecutive_failures, WebhookDestination.opened_until)
    count, opened_until = (await session.execute(upsert)).one()
    if count == threshold or (opened_until is not None and count > threshold):
        logger.warning(
            "circuit open",
            destination=destination,
            consecutive_failures=count,
            open_seconds=open_seconds,
        )
    return opened_until if count >= threshold else None


async def record_success(session: AsyncSession, destination: str) -> None:
    """Close the circuit: forget the destination's failures."""
    tripped = await session.scalar(
        delete(WebhookDestination)
        .where(WebhookDestination.destination == destination)
        .returning(WebhookDestination.opened_until)
    )
    if tripped is not None:
        logger.info("circuit closed", destination=destination)


async def forget_idle(session: AsyncSession, *, older_than: timedelta) -> None:
    """Drop destinations that failed a while ago and have not been tried since."""
    await session.execute(
        delete(WebhookDestination).where(
            WebhookDestination.updated_at < func.now() - older_than,
            (WebhookDestination.opened_until.is_(None))
            | (WebhookDestination.opened_until < func.now()),
        )
    )

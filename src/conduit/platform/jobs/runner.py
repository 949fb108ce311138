"""Run one job's handler inside a transaction the caller commits.

An event handler runs at most once per event: the first statement of its transaction records
(event, handler) in `event_handling`; a redelivered event finds the record and is skipped, and
a handler that fails rolls the record back with everything else it wrote.
"""

from __future__ import annotations

import random
from datetime import timedelta

import structlog
from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert

from conduit.platform.db.base import table_of
from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.models import EventHandling
from conduit.platform.jobs.queue import decode
from conduit.platform.jobs.registry import Event, registry

logger = structlog.stdlib.get_logger(__name__)


def max_attempts(name: str, default: int) -> int:
    spec = registry.jobs.get(name) or registry.subscriptions.get(name)
    configured = spec.max_attempts if spec is not None else None
    return configured if configured is not None else default


def retry_delay(attempt: int, *, base_seconds: float, max_seconds: float) -> timedelta:
    """Exponential backoff with "equal jitter": half the step fixed, half random, so a burst of
    failures (an endpoint down for everyone) does not come back as a synchronised burst."""
    step = min(max_seconds, base_seconds * 2 ** (attempt - 1))
    return timedelta(seconds=step / 2 + random.uniform(0, step / 2))  # noqa: S311


async def run_job(context: JobContext, name: str, payload: bytes | None) -> None:
    subscription = registry.subscriptions.get(name)
    if subscription is not None:
        event = Event.from_json(decode(payload))
        claimed = await context.session.scalar(
            _CLAIM_EVENT, {"claimed_event_id": event.id, "handler_name": name}
        )
        if claimed is None:
            logger.info("event already handled", job=name, event_id=str(event.id))
            return
        await subscription.handler(context, event)
        return
    job = registry.jobs.get(name)
    if job is None:
        raise LookupError(f"no job named {name!r} is registered")
    await job.handler(context, decode(payload))


# Built once: building it cost about as much as running it, once for every event handled.
_HANDLINGS = table_of(EventHandling)
_CLAIM_EVENT = (
    insert(_HANDLINGS)
    .values(
        event_id=bindparam("claimed_event_id", type_=_HANDLINGS.c.event_id.type),
        handler=bindparam("handler_name", type_=_HANDLINGS.c.handler.type),
    )
    .on_conflict_do_nothing()
    .returning(_HANDLINGS.c.event_id)
)

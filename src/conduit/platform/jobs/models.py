"""The outbox of domain events, and the record of which handler has handled which event.

The queue itself is pgqueuer's tables (`pgqueuer`, `pgqueuer_log`, ...), created by a migration
from pgqueuer's own schema and left out of the models: pgqueuer owns their shape.
"""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from conduit.platform.db.base import Base

QUEUE_TABLES = frozenset({"pgqueuer", "pgqueuer_log", "pgqueuer_schedules", "pgqueuer_statistics"})


class DomainEvent(Base):
    __tablename__ = "domain_event"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False)
    occurred_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    __table_args__ = (Index("ix_domain_event_occurred_at", "occurred_at"),)


class EventHandling(Base):
    """`handler` has handled `event_id`: written in the handler's own transaction, so a
    redelivered event finds it and is skipped, and a failed handler leaves none."""

    __tablename__ = "event_handling"

    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True),
        ForeignKey("domain_event.id", ondelete="CASCADE"),
        primary_key=True,
    )
    handler: Mapped[str] = mapped_column(String(100), primary_key=True)
    handled_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

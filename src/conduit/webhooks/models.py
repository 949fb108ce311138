"""Webhook endpoints, their deliveries, and the circuit-breaker state of each destination."""

import uuid
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from conduit.platform.db.base import Base, IdMixin, TimestampMixin

EVENT_TYPE_MAX_LENGTH = 64
DESTINATION_MAX_LENGTH = 300
STATUS_MAX_LENGTH = 16


class DeliveryStatus(StrEnum):
    # Waiting for its next attempt (or for the destination's circuit to half-open).
    pending = "pending"
    delivered = "delivered"
    # Gave up: attempts exhausted, or refused without trying (see `last_error`).
    failed = "failed"


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    __tablename__ = "webhook_endpoint"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(String(EVENT_TYPE_MAX_LENGTH)))
    active: Mapped[bool] = mapped_column(Boolean, server_default="true", default=True)
    # The HMAC key itself: signing needs it in the clear, so it is stored as issued, returned
    # only in the response that issues it and never logged.
    secret: Mapped[str] = mapped_column(Text)

    __table_args__ = (Index("ix_webhook_endpoint_user_id_created_at", "user_id", "created_at"),)


class WebhookDelivery(IdMixin, TimestampMixin, Base):
    """One event for one endpoint, and the story of getting it there.

    `schedule` counts the jobs ever queued for the delivery; each job carries the count it was
    queued with and does nothing unless it is still the current one, so a redelivery or a
    reschedule makes any older job harmless.
    """

    __tablename__ = "webhook_delivery"

    endpoint_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("webhook_endpoint.id", ondelete="CASCADE")
    )
    # Not a foreign key: events leave the outbox after EVENT_RETENTION_DAYS, the log stays.
    event_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    event_type: Mapped[str] = mapped_column(String(EVENT_TYPE_MAX_LENGTH))
    # The exact bytes sent (and signed), built once so that every attempt sends the same body.
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[DeliveryStatus] = mapped_column(
        Enum(
            DeliveryStatus,
            native_enum=False,
            create_constraint=False,
            length=STATUS_MAX_LENGTH,
            values_callable=lambda statuses: [status.value for status in statuses],
        ),
        server_default=DeliveryStatus.pending.value,
        default=DeliveryStatus.pending,
    )
    attempts: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    schedule: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    last_response_status: Mapped[int | None] = mapped_column(SmallInteger)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index(
            "ix_webhook_delivery_endpoint_id_created_at_id",
            "endpoint_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_webhook_delivery_created_at", "created_at"),
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status_known"),
    )


class WebhookDestination(Base):
    """The circuit breaker of one destination (`host:port`), shared by every worker.

    A row exists only while the destination is failing: a success deletes it. While
    `opened_until` is in the future the circuit is open; once it has passed, the circuit is
    half-open and the first delivery to claim the row probes the destination.
    """

    __tablename__ = "webhook_destination"

    destination: Mapped[str] = mapped_column(String(DESTINATION_MAX_LENGTH), primary_key=True)
    consecutive_failures: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    opened_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

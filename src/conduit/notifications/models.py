"""The notification table: one row per recipient and thing that happened to them.

Every reference cascades: deleting an article, a comment or an account deletes the
notifications about it, so a notification never points at something gone.
"""

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from conduit.platform.db.base import Base, IdMixin

KIND_MAX_LENGTH = 16


class Kind(StrEnum):
    # Someone the recipient follows published an article.
    article = "article"
    # Someone commented on the recipient's article.
    comment = "comment"
    # Someone started following the recipient.
    follow = "follow"
    # Someone favorited the recipient's article.
    favorite = "favorite"


class Notification(IdMixin, Base):
    __tablename__ = "notification"

    recipient_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )
    # Stored as text with a CHECK, not a PostgreSQL enum, so adding a kind needs no type change.
    kind: Mapped[Kind] = mapped_column(
        Enum(
            Kind,
            native_enum=False,
            create_constraint=False,
            length=KIND_MAX_LENGTH,
            values_callable=lambda kinds: [kind.value for kind in kinds],
        )
    )
    actor_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )
    article_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("article.id", ondelete="CASCADE")
    )
    comment_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("comment.id", ondelete="CASCADE")
    )
    # When the change happened (the event's time), not when the notification was written.
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    read_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        CheckConstraint("kind IN ('article', 'comment', 'follow', 'favorite')", name="kind_known"),
        # What each kind refers to, so that a reader never meets a half-filled row.
        CheckConstraint("(comment_id IS NOT NULL) = (kind = 'comment')", name="comment_shape"),
        CheckConstraint("(article_id IS NULL) = (kind = 'follow')", name="article_shape"),
        # A recipient's page, newest first, and the count of all of them.
        Index(
            "ix_notification_recipient_id_created_at_id",
            "recipient_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        # The unread count, and marking everything read, touch only the unread rows.
        Index(
            "ix_notification_recipient_id_unread",
            "recipient_id",
            postgresql_where=text("read_at IS NULL"),
        ),
        # ON DELETE CASCADE from an account, an article or a comment finds its rows by these.
        Index("ix_notification_actor_id", "actor_id"),
        Index("ix_notification_article_id", "article_id"),
        Index(
            "ix_notification_comment_id",
            "comment_id",
            postgresql_where=text("comment_id IS NOT NULL"),
        ),
        # Following or favoriting again after undoing it notifies once: toggling must not
        # become a way to flood someone's notifications.
        Index(
            "uq_notification_follow",
            "recipient_id",
            "actor_id",
            unique=True,
            postgresql_where=text("kind = 'follow'"),
        ),
        Index(
            "uq_notification_favorite",
            "recipient_id",
            "article_id",
            "actor_id",
            unique=True,
            postgresql_where=text("kind = 'favorite'"),
        ),
    )

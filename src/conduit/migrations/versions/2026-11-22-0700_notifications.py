"""notifications

Revision ID: 3f1a9c2e7b10
Revises: dd7a651491a9
Create Date: 2026-11-22 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f1a9c2e7b10"
down_revision: str | None = "dd7a651491a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification",
        sa.Column("recipient_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "article",
                "comment",
                "follow",
                "favorite",
                name="kind",
                native_enum=False,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("actor_id", sa.BigInteger(), nullable=False),
        sa.Column("article_id", sa.BigInteger(), nullable=True),
        sa.Column("comment_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.CheckConstraint(
            "(article_id IS NULL) = (kind = 'follow')",
            name=op.f("ck_notification_article_shape"),
        ),
        sa.CheckConstraint(
            "(comment_id IS NOT NULL) = (kind = 'comment')",
            name=op.f("ck_notification_comment_shape"),
        ),
        sa.CheckConstraint(
            "kind IN ('article', 'comment', 'follow', 'favorite')",
            name=op.f("ck_notification_kind_known"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"],
            ["user_account.id"],
            name=op.f("fk_notification_actor_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["article.id"],
            name=op.f("fk_notification_article_id_article"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["comment_id"],
            ["comment.id"],
            name=op.f("fk_notification_comment_id_comment"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["recipient_id"],
            ["user_account.id"],
            name=op.f("fk_notification_recipient_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification")),
    )
    op.create_index("ix_notification_actor_id", "notification", ["actor_id"], unique=False)
    op.create_index("ix_notification_article_id", "notification", ["article_id"], unique=False)
    op.create_index(
        "ix_notification_comment_id",
        "notification",
        ["comment_id"],
        unique=False,
        postgresql_where=sa.text("comment_id IS NOT NULL"),
    )
    op.create_index(
        "ix_notification_recipient_id_created_at_id",
        "notification",
        ["recipient_id", sa.literal_column("created_at DESC"), sa.literal_column("id DESC")],
        unique=False,
    )
    op.create_index(
        "ix_notification_recipient_id_unread",
        "notification",
        ["recipient_id"],
        unique=False,
        postgresql_where=sa.text("read_at IS NULL"),
    )
    op.create_index(
        "uq_notification_favorite",
        "notification",
        ["recipient_id", "article_id", "actor_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'favorite'"),
    )
    op.create_index(
        "uq_notification_follow",
        "notification",
        ["recipient_id", "actor_id"],
        unique=True,
        postgresql_where=sa.text("kind = 'follow'"),
    )


def downgrade() -> None:
    # Dropping the table drops its indexes and constraints with it.
    op.drop_table("notification")

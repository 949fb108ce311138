"""feed read model

The per-follower feed rows written on publication, and each author's fan-out mode.

Revision ID: 7c4f0a6e3b30
Revises: 5b2e8d4f1a20
Create Date: 2026-11-22 07:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "7c4f0a6e3b30"
down_revision: str | None = "5b2e8d4f1a20"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "feed_author",
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "mode",
            sa.Enum("write", "read", "backfill", name="fanout", native_enum=False, length=16),
            server_default="write",
            nullable=False,
        ),
        sa.Column("settled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("cursor_created_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cursor_article_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "mode_changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "mode IN ('write', 'read', 'backfill')", name=op.f("ck_feed_author_mode_known")
        ),
        sa.ForeignKeyConstraint(
            ["author_id"],
            ["user_account.id"],
            name=op.f("fk_feed_author_author_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("author_id", name=op.f("pk_feed_author")),
    )
    op.create_index(
        "ix_feed_author_author_id_read_from_articles",
        "feed_author",
        ["author_id"],
        unique=False,
        postgresql_where=sa.text("mode <> 'write'"),
    )
    op.create_table(
        "feed_entry",
        sa.Column("follower_id", sa.BigInteger(), nullable=False),
        sa.Column("article_created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("article_id", sa.BigInteger(), nullable=False),
        sa.Column("author_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["article_id"],
            ["article.id"],
            name=op.f("fk_feed_entry_article_id_article"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["follower_id"],
            ["user_account.id"],
            name=op.f("fk_feed_entry_follower_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "follower_id",
            "article_created_at",
            "article_id",
            name="pk_feed_entry",
            postgresql_include=["author_id"],
        ),
    )
    op.create_index("ix_feed_entry_article_id", "feed_entry", ["article_id"], unique=False)
    # Existing follows become rows, as the feed read them before: every author starts in
    # fan-out on write, and those over the threshold switch at their next publication, follow
    # or unfollow.
    op.execute(
        "INSERT INTO feed_entry (follower_id, article_created_at, article_id, author_id) "
        "SELECT follow.follower_id, article.created_at, article.id, article.author_id "
        "FROM follow JOIN article ON article.author_id = follow.followee_id"
    )


def downgrade() -> None:
    op.drop_index("ix_feed_entry_article_id", table_name="feed_entry")
    op.drop_table("feed_entry")
    op.drop_index(
        "ix_feed_author_author_id_read_from_articles",
        table_name="feed_author",
        postgresql_where=sa.text("mode <> 'write'"),
    )
    op.drop_table("feed_author")

"""sessions and roles

Revision ID: fb65426c17da
Revises: cc5617eb36fe
Create Date: 2026-11-22 04:08:52.600707
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "fb65426c17da"
down_revision: str | None = "cc5617eb36fe"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "user_account",
        sa.Column("role", sa.String(length=16), server_default="user", nullable=False),
    )
    op.create_check_constraint(
        op.f("ck_user_account_role_known"),
        "user_account",
        "role IN ('user', 'moderator', 'admin')",
    )
    op.add_column(
        "user_account", sa.Column("suspended_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        "user_account",
        sa.Column("token_version", sa.Integer(), server_default="0", nullable=False),
    )
    op.create_table(
        "refresh_token_family",
        sa.Column("user_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["user_account.id"],
            name=op.f("fk_refresh_token_family_user_id_user_account"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_token_family")),
    )
    op.create_index(
        "ix_refresh_token_family_user_id", "refresh_token_family", ["user_id"], unique=False
    )
    op.create_table(
        "refresh_token",
        sa.Column("family_id", sa.BigInteger(), nullable=False),
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("rotated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["refresh_token_family.id"],
            name=op.f("fk_refresh_token_family_id_refresh_token_family"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_refresh_token")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_refresh_token_token_hash")),
    )
    op.create_index("ix_refresh_token_family_id", "refresh_token", ["family_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_refresh_token_family_id", table_name="refresh_token")
    op.drop_table("refresh_token")
    op.drop_index("ix_refresh_token_family_user_id", table_name="refresh_token_family")
    op.drop_table("refresh_token_family")
    op.drop_column("user_account", "token_version")
    op.drop_column("user_account", "suspended_at")
    op.drop_constraint(op.f("ck_user_account_role_known"), "user_account", type_="check")
    op.drop_column("user_account", "role")

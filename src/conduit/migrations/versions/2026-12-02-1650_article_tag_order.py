"""article tag order

A tag's articles, newest first, straight from an index: each link carries its article's
creation time, so that a page of a popular tag reads a page of index entries instead of
sorting every article the tag is on.

The copy is filled by a trigger when a link is written without it (the app writes links
through its ORM relationship) and follows the article if its creation time is ever changed.

Revision ID: c41e7b9d0a26
Revises: b3f6a2d8c915
Create Date: 2026-12-02 16:50:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "c41e7b9d0a26"
down_revision: str | None = "b3f6a2d8c915"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

STATEMENTS = [
    """
    CREATE FUNCTION article_tag_copy_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.article_created_at IS NULL THEN
            SELECT created_at INTO NEW.article_created_at FROM article WHERE id = NEW.article_id;
        END IF;
        RETURN NEW;
    END $$
    """,
    "CREATE TRIGGER article_tag_copy_created_at BEFORE INSERT ON article_tag "
    "FOR EACH ROW EXECUTE FUNCTION article_tag_copy_created_at()",
    """
    CREATE FUNCTION article_tag_follow_created_at() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE article_tag SET article_created_at = NEW.created_at WHERE article_id = NEW.id;
        RETURN NULL;
    END $$
    """,
    "CREATE TRIGGER article_tag_follow_created_at AFTER UPDATE OF created_at ON article "
    "FOR EACH ROW WHEN (OLD.created_at IS DISTINCT FROM NEW.created_at) "
    "EXECUTE FUNCTION article_tag_follow_created_at()",
]


def upgrade() -> None:
    op.add_column(
        "article_tag",
        sa.Column("article_created_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.execute("LOCK TABLE article, article_tag IN SHARE ROW EXCLUSIVE MODE")
    op.execute(
        "UPDATE article_tag SET article_created_at = article.created_at "
        "FROM article WHERE article.id = article_tag.article_id"
    )
    op.alter_column("article_tag", "article_created_at", nullable=False)
    for statement in STATEMENTS:
        op.execute(statement)
    op.create_index(
        "ix_article_tag_tag_id_article_created_at_article_id",
        "article_tag",
        ["tag_id", sa.text("article_created_at DESC"), sa.text("article_id DESC")],
    )
    # The new index leads with tag_id too, so it serves whatever the old one did.
    op.drop_index("ix_article_tag_tag_id_article_id", table_name="article_tag")


def downgrade() -> None:
    op.create_index("ix_article_tag_tag_id_article_id", "article_tag", ["tag_id", "article_id"])
    op.drop_index("ix_article_tag_tag_id_article_created_at_article_id", table_name="article_tag")
    op.execute("DROP TRIGGER article_tag_follow_created_at ON article")
    op.execute("DROP FUNCTION article_tag_follow_created_at()")
    op.execute("DROP TRIGGER article_tag_copy_created_at ON article_tag")
    op.execute("DROP FUNCTION article_tag_copy_created_at()")
    op.drop_column("article_tag", "article_created_at")

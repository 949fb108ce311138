"""article search

Full-text search over title, description and body: each article's text search configuration,
a generated, weighted `tsvector`, and a GIN index on it.

Adding a stored generated column rewrites the table under an exclusive lock, and the index is
built from every row: on a large database, run this migration in a maintenance window.

Revision ID: 9e1d5c7a2f44
Revises: 7c4f0a6e3b30
Create Date: 2026-12-02 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "9e1d5c7a2f44"
down_revision: str | None = "7c4f0a6e3b30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in `conduit.articles.models`, frozen here: a later change of the model must not change
# what this migration did.
SEARCH_DOCUMENT = (
    "setweight(to_tsvector(search_language, title), 'A')"
    " || setweight(to_tsvector(search_language, description), 'B')"
    " || setweight(to_tsvector(search_language, body), 'C')"
)


def upgrade() -> None:
    op.add_column(
        "article",
        sa.Column(
            "search_language",
            postgresql.REGCONFIG(),
            server_default=sa.text("'english'::regconfig"),
            nullable=False,
        ),
    )
    op.add_column(
        "article",
        sa.Column(
            "search",
            postgresql.TSVECTOR(),
            sa.Computed(SEARCH_DOCUMENT, persisted=True),
            nullable=False,
        ),
    )
    op.create_index("ix_article_search", "article", ["search"], postgresql_using="gin")


def downgrade() -> None:
    op.drop_index("ix_article_search", table_name="article", postgresql_using="gin")
    op.drop_column("article", "search")
    op.drop_column("article", "search_language")

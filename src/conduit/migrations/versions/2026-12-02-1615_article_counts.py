"""article counts

Counts that lists and the tag cloud would otherwise compute by reading every row: the number
of articles (in sixteen shards, so that concurrent publications do not queue on one row) and
each tag's number of articles. Triggers keep them, statement by statement, so that every path
that adds or removes rows (the app, a cascade from a deleted account, a bulk load) counts.

Revision ID: b3f6a2d8c915
Revises: 9e1d5c7a2f44
Create Date: 2026-12-02 16:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b3f6a2d8c915"
down_revision: str | None = "9e1d5c7a2f44"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# An article counts in shard `id % 16` (`ARTICLE_TALLY_SHARDS` in the models).
# Transition tables hold every row a statement changed, so one UPDATE per statement suffices
# however many rows it touched; a trigger with transition tables takes one event only.
FUNCTIONS = [
    """
    CREATE FUNCTION article_tally_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        INSERT INTO article_tally (shard, articles)
        SELECT id % 16, count(*) FROM added_articles GROUP BY 1 ORDER BY 1
        ON CONFLICT (shard) DO UPDATE SET articles = article_tally.articles + EXCLUDED.articles;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION article_tally_remove() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE article_tally SET articles = article_tally.articles - removed.articles
        FROM (SELECT id % 16 AS shard, count(*) AS articles FROM removed_articles
              GROUP BY 1) AS removed
        WHERE article_tally.shard = removed.shard;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION tag_count_add() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE tag SET articles_count = tag.articles_count + added.articles
        FROM (SELECT tag_id, count(*) AS articles FROM added_links GROUP BY 1) AS added
        WHERE tag.id = added.tag_id;
        RETURN NULL;
    END $$
    """,
    """
    CREATE FUNCTION tag_count_remove() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        UPDATE tag SET articles_count = tag.articles_count - removed.articles
        FROM (SELECT tag_id, count(*) AS articles FROM removed_links GROUP BY 1) AS removed
        WHERE tag.id = removed.tag_id;
        RETURN NULL;
    END $$
    """,
]

TRIGGERS = [
    "CREATE TRIGGER article_tally_add AFTER INSERT ON article "
    "REFERENCING NEW TABLE AS added_articles FOR EACH STATEMENT "
    "EXECUTE FUNCTION article_tally_add()",
    "CREATE TRIGGER article_tally_remove AFTER DELETE ON article "
    "REFERENCING OLD TABLE AS removed_articles FOR EACH STATEMENT "
    "EXECUTE FUNCTION article_tally_remove()",
    "CREATE TRIGGER tag_count_add AFTER INSERT ON article_tag "
    "REFERENCING NEW TABLE AS added_links FOR EACH STATEMENT "
    "EXECUTE FUNCTION tag_count_add()",
    "CREATE TRIGGER tag_count_remove AFTER DELETE ON article_tag "
    "REFERENCING OLD TABLE AS removed_links FOR EACH STATEMENT "
    "EXECUTE FUNCTION tag_count_remove()",
]


def upgrade() -> None:
    op.create_table(
        "article_tally",
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("articles", sa.BigInteger(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("shard", name=op.f("pk_article_tally")),
    )
    op.add_column(
        "tag", sa.Column("articles_count", sa.Integer(), server_default="0", nullable=False)
    )
    # Counted under locks that keep writers out until the triggers count for them.
    op.execute("LOCK TABLE article, article_tag IN SHARE MODE")
    op.execute(
        "INSERT INTO article_tally (shard, articles) "
        "SELECT id % 16, count(*) FROM article GROUP BY 1"
    )
    op.execute(
        "UPDATE tag SET articles_count = counted.articles "
        "FROM (SELECT tag_id, count(*) AS articles FROM article_tag GROUP BY 1) AS counted "
        "WHERE tag.id = counted.tag_id"
    )
    for statement in FUNCTIONS + TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    for table, trigger in [
        ("article_tag", "tag_count_remove"),
        ("article_tag", "tag_count_add"),
        ("article", "article_tally_remove"),
        ("article", "article_tally_add"),
    ]:
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
        op.execute(f"DROP FUNCTION {trigger}()")
    op.drop_column("tag", "articles_count")
    op.drop_table("article_tally")

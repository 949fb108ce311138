from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import (
    BigInteger,
    Computed,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    SmallInteger,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import REGCONFIG, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conduit.platform.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from conduit.users.models import User

SLUG_MAX_LENGTH = 255
TAG_MAX_LENGTH = 64
ARTICLE_TALLY_SHARDS = 16

# Title weighs most in the ranking, then the description, then the body. The configuration is
# the article's own, so that changing SEARCH_LANGUAGE never leaves an article indexed under one
# language and searched under another without the row saying so.
SEARCH_DOCUMENT = (
    "setweight(to_tsvector(search_language, title), 'A')"
    " || setweight(to_tsvector(search_language, description), 'B')"
    " || setweight(to_tsvector(search_language, body), 'C')"
)


class Tag(IdMixin, Base):
    __tablename__ = "tag"

    name: Mapped[str] = mapped_column(String(TAG_MAX_LENGTH), unique=True)
    # Kept by triggers on article_tag (see the migration that adds it), so that a cascade from
    # a deleted article or account counts too.
    articles_count: Mapped[int] = mapped_column(Integer, server_default="0", default=0)


class ArticleTally(Base):
    """The number of articles, as the sum of its shards (an article counts in shard
    `id % ARTICLE_TALLY_SHARDS`). Kept by triggers on article; publications in parallel update
    different rows, so none waits for another's commit."""

    __tablename__ = "article_tally"

    shard: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    articles: Mapped[int] = mapped_column(BigInteger, server_default="0")


class ArticleTag(Base):
    __tablename__ = "article_tag"

    article_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("article.id", ondelete="CASCADE"), primary_key=True
    )
    tag_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("tag.id", ondelete="CASCADE"), primary_key=True
    )
    # The article's creation time, which orders a tag's page straight from the index below.
    # A trigger fills it when a link is written without it, as the `tags` relationship does.
    article_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        Index(
            "ix_article_tag_tag_id_article_created_at_article_id",
            "tag_id",
            text("article_created_at DESC"),
            text("article_id DESC"),
        ),
    )


class Article(IdMixin, TimestampMixin, Base):
    __tablename__ = "article"

    slug: Mapped[str] = mapped_column(String(SLUG_MAX_LENGTH), unique=True)
    title: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    author_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )
    # Kept in step with the favorite table in the same transaction, so lists never count rows.
    favorites_count: Mapped[int] = mapped_column(Integer, server_default="0", default=0)
    # Deferred: no read but a search needs them, and the vector is as large as the text.
    search_language: Mapped[str] = mapped_column(
        REGCONFIG,
        server_default=text("'english'::regconfig"),
        deferred=True,
        deferred_raiseload=True,
    )
    search: Mapped[str] = mapped_column(
        TSVECTOR,
        Computed(SEARCH_DOCUMENT, persisted=True),
        deferred=True,
        deferred_raiseload=True,
    )

    author: Mapped["User"] = relationship(lazy="raise")
    # Byte order ("C" collation), as the API promises, whatever the database's locale.
    tags: Mapped[list[Tag]] = relationship(
        secondary="article_tag", lazy="raise", order_by=Tag.name.collate("C")
    )

    __table_args__ = (
        Index("ix_article_created_at_id", text("created_at DESC"), text("id DESC")),
        Index(
            "ix_article_author_id_created_at_id",
            "author_id",
            text("created_at DESC"),
            text("id DESC"),
        ),
        Index("ix_article_search", "search", postgresql_using="gin"),
    )


class Favorite(Base):
    __tablename__ = "favorite"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    article_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("article.id", ondelete="CASCADE"), primary_key=True
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    __table_args__ = (Index("ix_favorite_article_id", "article_id"),)

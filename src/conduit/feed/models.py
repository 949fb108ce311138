"""The feed's tables: one row per (follower, article) for the authors whose publications are
fanned out on write, and per author, how their articles reach their followers' feeds."""

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
    PrimaryKeyConstraint,
    func,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from conduit.platform.db.base import Base

MODE_MAX_LENGTH = 16


class FeedEntry(Base):
    """`article_id` is in `follower_id`'s feed.

    The primary key is the feed's sort order, so a page is a backward range scan of one
    follower's slice of the index; `author_id` rides along in it (INCLUDE), so that counting a
    feed and leaving out the authors read from `article` need not visit the table.
    """

    __tablename__ = "feed_entry"

    follower_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )
    # Copies of the article's creation time and author, which never change: the sort key and
    # the filter must not need the article row.
    article_created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    article_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("article.id", ondelete="CASCADE")
    )
    author_id: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (
        PrimaryKeyConstraint(
            "follower_id",
            "article_created_at",
            "article_id",
            name="pk_feed_entry",
            postgresql_include=["author_id"],
        ),
        # Deleting an article deletes its rows through this index (ON DELETE CASCADE).
        Index("ix_feed_entry_article_id", "article_id"),
    )


class FanOut(StrEnum):
    """How an author's articles reach their followers' feeds."""

    # Each publication writes one row per follower; feeds read those rows.
    on_write = "write"
    # Too many followers to write for: nothing is written, feeds read the author's articles.
    on_read = "read"
    # Back under the threshold: rows are written again and the articles published meanwhile
    # are being backfilled; feeds keep reading the articles until the backfill is complete.
    backfilling = "backfill"

    @property
    def writes_rows(self) -> bool:
        return self is not FanOut.on_read

    @property
    def reads_articles(self) -> bool:
        return self is not FanOut.on_write


class FeedAuthor(Base):
    """An author's fan-out mode, changed only by the feed's jobs, each in the transaction that
    makes the rows agree with it. No row means fan-out on write.

    Every feed job that touches an author's rows locks this row first, so those jobs run one
    at a time per author and each sees the mode the last one left.
    """

    __tablename__ = "feed_author"

    author_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE"), primary_key=True
    )
    # Stored as text with a CHECK, not a PostgreSQL enum, so adding a mode needs no type change.
    mode: Mapped[FanOut] = mapped_column(
        Enum(
            FanOut,
            native_enum=False,
            create_constraint=False,
            length=MODE_MAX_LENGTH,
            values_callable=lambda modes: [mode.value for mode in modes],
        ),
        server_default=FanOut.on_write.value,
        default=FanOut.on_write,
    )
    # False while rows are left to write (backfilling) or to delete (after switching to
    # fan-out on read); the `feed.settle_author` job works through them in batches.
    settled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    # How far that work has gone through the author's articles, newest first (null: not begun).
    cursor_created_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cursor_article_id: Mapped[int | None] = mapped_column(BigInteger)
    mode_changed_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )

    __table_args__ = (
        CheckConstraint("mode IN ('write', 'read', 'backfill')", name="mode_known"),
        # Feeds look up which of the viewer's followees are read from `article`: the few
        # authors not fanned out on write.
        Index(
            "ix_feed_author_author_id_read_from_articles",
            "author_id",
            postgresql_where=text("mode <> 'write'"),
        ),
    )

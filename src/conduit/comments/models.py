from typing import TYPE_CHECKING

from sqlalchemy import BigInteger, ForeignKey, Index, Text, text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conduit.platform.db.base import Base, IdMixin, TimestampMixin

if TYPE_CHECKING:
    from conduit.users.models import User


class Comment(IdMixin, TimestampMixin, Base):
    __tablename__ = "comment"

    body: Mapped[str] = mapped_column(Text)
    article_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("article.id", ondelete="CASCADE")
    )
    author_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )

    author: Mapped["User"] = relationship(lazy="raise")

    __table_args__ = (
        Index("ix_comment_article_id_created_at", "article_id", text("created_at DESC")),
        Index("ix_comment_author_id", "author_id"),
    )

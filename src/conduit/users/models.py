from sqlalchemy import Index, String, Text, func
from sqlalchemy.orm import Mapped, mapped_column

from conduit.platform.db.base import Base, IdMixin, TimestampMixin

USERNAME_MAX_LENGTH = 64
EMAIL_MAX_LENGTH = 254


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "user_account"

    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    password_hash: Mapped[str] = mapped_column(Text)
    bio: Mapped[str] = mapped_column(Text, server_default="", default="")
    image: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        Index("uq_user_account_username_lower", func.lower(username), unique=True),
        Index("uq_user_account_email_lower", func.lower(email), unique=True),
    )

from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from conduit.platform.db.base import Base, IdMixin, TimestampMixin

USERNAME_MAX_LENGTH = 64
EMAIL_MAX_LENGTH = 254
ROLE_MAX_LENGTH = 16


class Role(StrEnum):
    """What an account may do, each role including the ones before it."""

    user = "user"
    moderator = "moderator"
    admin = "admin"

    def includes(self, other: "Role") -> bool:
        order = list(Role)
        return order.index(self) >= order.index(other)


class User(IdMixin, TimestampMixin, Base):
    __tablename__ = "user_account"

    username: Mapped[str] = mapped_column(String(USERNAME_MAX_LENGTH))
    email: Mapped[str] = mapped_column(String(EMAIL_MAX_LENGTH))
    password_hash: Mapped[str] = mapped_column(Text)
    bio: Mapped[str] = mapped_column(Text, server_default="", default="")
    image: Mapped[str | None] = mapped_column(Text)
    # Stored as text with a CHECK, not a PostgreSQL enum, so adding a role needs no type change.
    role: Mapped[Role] = mapped_column(
        Enum(
            Role,
            native_enum=False,
            create_constraint=False,
            length=ROLE_MAX_LENGTH,
            values_callable=lambda roles: [role.value for role in roles],
        ),
        server_default=Role.user.value,
        default=Role.user,
    )
    suspended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Access tokens carry the version they were issued under; bumping it revokes them all.
    token_version: Mapped[int] = mapped_column(Integer, server_default="0", default=0)

    __table_args__ = (
        Index("uq_user_account_username_lower", func.lower(username), unique=True),
        Index("uq_user_account_email_lower", func.lower(email), unique=True),
        CheckConstraint("role IN ('user', 'moderator', 'admin')", name="role_known"),
    )

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None

    @property
    def can_moderate(self) -> bool:
        return self.role.includes(Role.moderator)


class RefreshTokenFamily(IdMixin, Base):
    """One sign-in: every refresh token rotated from the one issued at login or registration."""

    __tablename__ = "refresh_token_family"

    user_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("user_account.id", ondelete="CASCADE")
    )
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    user: Mapped[User] = relationship(lazy="raise")

    __table_args__ = (Index("ix_refresh_token_family_user_id", "user_id"),)


class RefreshToken(IdMixin, Base):
    """A refresh token, known only by its SHA-256 digest; `rotated_at` is set once it is used."""

    __tablename__ = "refresh_token"

    family_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("refresh_token_family.id", ondelete="CASCADE")
    )
    token_hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), nullable=False
    )
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    family: Mapped[RefreshTokenFamily] = relationship(lazy="raise")

    __table_args__ = (Index("ix_refresh_token_family_id", "family_id"),)

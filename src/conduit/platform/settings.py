"""Settings read from the environment and an optional `.env` file.

Every field is documented in the README's configuration table; keep the two in step.
"""

from __future__ import annotations

import os
import re
import secrets
from enum import StrEnum
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Annotated, Self
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from limits import parse_many
from pydantic import AfterValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

MIN_SECRET_LENGTH = 32
_PLACEHOLDER_SECRETS = {"changeme", "changethis", "secret", "development"}


class Environment(StrEnum):
    development = "development"
    test = "test"
    production = "production"


class LogFormat(StrEnum):
    auto = "auto"
    json = "json"
    console = "console"


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


class SettingsError(RuntimeError):
    """The configuration cannot be used; the message says what to change."""


def _parse_rate_limit(value: str) -> str:
    """Rate limits use the `limits` notation: `100/minute`, `10 per 15 minutes`, or several
    separated by `;` (`10/second;300/minute`)."""
    try:
        parse_many(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a rate limit such as '100/minute' or '10/15minutes'"
        ) from None
    return value


RateLimit = Annotated[str, AfterValidator(_parse_rate_limit)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    environment: Environment = Environment.development
    data_dir: Path = Path(".conduit")

    database_url: str | None = None
    db_pool_size: int = Field(default_factory=lambda: 2 * (os.cpu_count() or 1) + 1, ge=1)
    # SQLAlchemy closes an overflow connection as soon as it is returned to a full pool, so under
    # steady load beyond the pool every overflow checkout opened a new PostgreSQL backend.
    db_max_overflow: int = Field(default=0, ge=0)
    db_pool_timeout_seconds: float = Field(default=10.0, gt=0)
    db_statement_timeout_ms: int = Field(default=15_000, ge=0)
    migrate_on_start: bool | None = None

    jwt_secret: SecretStr | None = None
    access_token_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    refresh_token_ttl_seconds: int = Field(default=30 * 24 * 3600, ge=60)

    cors_origins: Annotated[list[str], NoDecode] = []
    cors_origin_regex: str | None = r"^https?://(localhost|127\.0\.0\.1|\[::1\])(:\d+)?$"
    cors_allow_credentials: bool = False

    max_body_bytes: int = Field(default=1024 * 1024, ge=1)
    shutdown_grace_seconds: int = Field(default=25, ge=0)
    health_check_timeout_seconds: float = Field(default=2.0, gt=0)

    log_format: LogFormat = LogFormat.auto
    log_level: LogLevel = LogLevel.INFO
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "conduit"

    max_page_size: int = Field(default=100, ge=1, le=1000)
    # A PostgreSQL text search configuration: an identifier, checked against the database at
    # start-up.
    search_language: str = Field(default="english", pattern=r"^[a-z][a-z0-9_]{0,62}$")
    search_max_results: int = Field(default=200, ge=1, le=100_000)

    redis_url: str | None = None
    redis_key_prefix: str = "conduit:"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    redis_retry_seconds: float = Field(default=5.0, ge=0)

    cache_enabled: bool = True
    cache_ttl_seconds: int = Field(default=300, ge=1)
    cache_stale_while_rebuilding_seconds: float = Field(default=1.0, ge=0)
    idempotency_ttl_seconds: int = Field(default=24 * 3600, ge=60)

    rate_limit_enabled: bool = True
    rate_limit_fail_open: bool = True
    rate_limit_anonymous: RateLimit = "300/minute"
    rate_limit_tiers: dict[str, RateLimit | None] = {
        "free": "600/minute",
        "pro": "3000/minute",
        "unlimited": None,
    }
    rate_limit_default_tier: str = "free"
    rate_limit_user_tiers: dict[int, str] = {}
    rate_limit_writes: RateLimit = "60/minute"
    rate_limit_login: RateLimit = "30/minute"
    rate_limit_register: RateLimit = "20/hour"
    rate_limit_login_failures_per_account: RateLimit = "10/15minutes"
    rate_limit_login_failures_per_ip: RateLimit = "50/15minutes"
    trusted_proxies: Annotated[list[IPv4Network | IPv6Network], NoDecode] = []

    worker_in_process: bool | None = None
    worker_concurrency: int = Field(default=10, ge=1, le=100)
    worker_grace_seconds: float = Field(default=20.0, ge=0)
    worker_metrics_port: int = Field(default=9100, ge=0, le=65535)
    job_heartbeat_timeout_seconds: float = Field(default=30.0, ge=1)
    job_max_attempts: int = Field(default=8, ge=1)
    job_retry_base_seconds: float = Field(default=2.0, gt=0)
    job_retry_max_seconds: float = Field(default=3600.0, gt=0)
    event_retention_days: int = Field(default=7, ge=1)

    smtp_url: str | None = None
    mail_from: str = "Conduit <no-reply@conduit.localhost>"
    mail_dir: Path | None = None
    public_url: str = "http://localhost:4200"

    feed_fanout_max_followers: int = Field(default=10_000, ge=0)

    notifications_stream_keepalive_seconds: float = Field(default=15.0, gt=0)

    webhooks_allow_private_addresses: bool = False
    webhook_timeout_seconds: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=10, ge=1)
    webhook_breaker_failures: int = Field(default=5, ge=1)
    webhook_breaker_open_seconds: float = Field(default=60.0, gt=0)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("database_url", "otel_exporter_otlp_endpoint", "smtp_url", mode="before")
    @classmethod
    def _blank_url_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _refuse_any_origin_with_credentials(self) -> Self:
        if not self.cors_allow_credentials:
            return self
        any_origin = "*" in self.cors_origins or (
            self.cors_origin_regex is not None
            and re.fullmatch(self.cors_origin_regex, "https://any-origin.invalid") is not None
        )
        if any_origin:
            raise SettingsError(
                "CORS_ALLOW_CREDENTIALS cannot be combined with an origin list or pattern that "
                "admits any origin: name the allowed origins"
            )
        return self

    @field_validator("smtp_url")
    @classmethod
    def _usable_smtp_url(cls, value: str | None) -> str | None:
        """A bad SMTP_URL stops the start, rather than the first email and every retry."""
        if value is not None:
            from conduit.platform.mail import MailConfigurationError, parse_smtp_url

            try:
                parse_smtp_url(value)
            except MailConfigurationError as error:
                # The message never quotes the URL, which may hold a password.
                raise SettingsError(str(error)) from None
        return value

    @field_validator("redis_url", mode="before")
    @classmethod
    def _blank_redis_url_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            return [proxy.strip() for proxy in value.split(",") if proxy.strip()]
        return value

    @model_validator(mode="after")
    def _known_rate_limit_tiers(self) -> Self:
        tiers = {self.rate_limit_default_tier, *self.rate_limit_user_tiers.values()}
        unknown = sorted(tiers - set(self.rate_limit_tiers))
        if unknown:
            raise SettingsError(
                f"rate-limit tier {', '.join(unknown)} is not defined in RATE_LIMIT_TIERS "
                f"(defined: {', '.join(sorted(self.rate_limit_tiers))})"
            )
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Self:
        if self.environment is Environment.production:
            secret = self.jwt_secret.get_secret_value() if self.jwt_secret else ""
            if len(secret) < MIN_SECRET_LENGTH or secret.lower() in _PLACEHOLDER_SECRETS:
                raise SettingsError(
                    f"JWT_SECRET must be set to a random value of at least {MIN_SECRET_LENGTH} "
                    "characters in production (for example: "
                    'python -c "import secrets; print(secrets.token_urlsafe(48))")'
                )
            if self.database_url is None:
                raise SettingsError("DATABASE_URL must be set in production")
        return self

    @property
    def uses_embedded_database(self) -> bool:
        return self.database_url is None

    @property
    def runs_worker_in_process(self) -> bool:
        """The embedded default runs jobs inside the server; with a configured database they
        belong to `conduit worker` processes unless WORKER_IN_PROCESS says otherwise."""
        if self.worker_in_process is not None:
            return self.worker_in_process
        return self.uses_embedded_database

    @property
    def mail_folder(self) -> Path:
        """Where emails are written as .eml files when no SMTP_URL is configured."""
        return self.mail_dir if self.mail_dir is not None else self.data_dir / "mail"

    @property
    def should_migrate_on_start(self) -> bool:
        if self.migrate_on_start is not None:
            return self.migrate_on_start
        return self.uses_embedded_database or self.environment is not Environment.production

    def jwt_signing_key(self) -> str:
        """The configured secret, or one generated once and kept in the data folder."""
        if self.jwt_secret is not None:
            return self.jwt_secret.get_secret_value()
        secret_file = self.data_dir / "jwt-secret"
        if not secret_file.exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_urlsafe(48))
        return secret_file.read_text().strip()


def to_async_database_url(url: str) -> str:
    """Turn the `postgres://` / `postgresql://` URL a host provides into an asyncpg one.

    Providers write `sslmode=require`; asyncpg calls the same option `ssl`.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise SettingsError(f"DATABASE_URL must be a postgresql:// URL, not {parts.scheme}://")
    query = [
        ("ssl", value) if key == "sslmode" else (key, value)
        for key, value in parse_qsl(parts.query)
    ]
    return urlunsplit(parts._replace(scheme="postgresql+asyncpg", query=urlencode(query)))


@lru_cache
def get_settings() -> Settings:
    return Settings()

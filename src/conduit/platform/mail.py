"""Outgoing email: one `Mailer` interface, two transports chosen by the settings.

- SMTP (`SMTP_URL` set), through aiosmtplib:
  - `smtp://[user:password@]host[:port]`: port 587 by default; the connection is upgraded
    with STARTTLS whenever the server offers it. Credentials are only ever sent encrypted: a
    server that offers no STARTTLS to a configured user is refused, never sent the password.
  - `smtps://[user:password@]host[:port]`: TLS from the first byte (implicit TLS), port 465 by
    default.
  - User and password are percent-decoded (`%40` for `@`, `%3A` for `:`, `%2F` for `/`).
  - `?timeout=SECONDS` bounds connecting and each command (default 15).
  - Certificates are verified against the system's CAs, host name included.
- A folder (`SMTP_URL` unset, the embedded default): each message becomes one `.eml` file in
  `settings.mail_folder`, for development and tests.

The URL holds a password, so it is never logged nor repeated in an error; a sent message is
logged by recipient and subject only.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import functools
import os
import secrets
import ssl
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr
from pathlib import Path
from typing import Protocol
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib
import structlog

from conduit.platform.settings import Settings

logger = structlog.stdlib.get_logger(__name__)

DEFAULT_SMTP_PORT = 587
DEFAULT_SMTPS_PORT = 465
DEFAULT_SMTP_TIMEOUT_SECONDS = 15.0
# Where Message-IDs are minted when the sender has no usable domain.
FALLBACK_MAIL_DOMAIN = "conduit.localhost"


class MailConfigurationError(ValueError):
    """SMTP_URL cannot be used. The message never quotes the URL: it may hold a password."""


class InsecureSmtpServer(aiosmtplib.SMTPException):
    """The server would have the password sent over an unencrypted connection."""


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Hand `message` over for delivery, or raise. Fills in Date and Message-ID when the
        message has none."""


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    implicit_tls: bool
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_seconds: float = DEFAULT_SMTP_TIMEOUT_SECONDS


def parse_smtp_url(url: str) -> SmtpServer:
    """The server an `smtp://` or `smtps://` URL names (forms in the module's docstring)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in {"smtp", "smtps"}:
        raise MailConfigurationError("SMTP_URL must start with smtp:// or smtps://")
    if not parts.hostname:
        raise MailConfigurationError("SMTP_URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise MailConfigurationError("SMTP_URL has an invalid port") from None
    if parts.path not in {"", "/"} or parts.fragment:
        raise MailConfigurationError("SMTP_URL takes no path: smtp://[user:password@]host[:port]")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if bool(username) != bool(password):
        raise MailConfigurationError("SMTP_URL needs both a user name and a password, or neither")
    timeout = DEFAULT_SMTP_TIMEOUT_SECONDS
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key != "timeout":
            raise MailConfigurationError(f"SMTP_URL has an unknown parameter {key!r}")
        try:
            timeout = float(value)
        except ValueError:
            timeout = 0.0
        if not 0 < timeout <= 600:
            raise MailConfigurationError("SMTP_URL timeout must be a number of seconds (0-600]")
    implicit_tls = scheme == "smtps"
    return SmtpServer(
        host=parts.hostname,
        port=port or (DEFAULT_SMTPS_PORT if implicit_tls else DEFAULT_SMTP_PORT),
        implicit_tls=implicit_tls,
        username=username or None,
        password=password or None,
        timeout_seconds=timeout,
    )


@functools.cache
def _system_tls_context() -> ssl.SSLContext:
    # Loading the system's CAs takes a while; one context serves every connection.
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


def mail_domain(sender: str) -> str:
    """The domain of a From value such as `Conduit <no-reply@conduit.example>`."""
    _, address = parseaddr(sender)
    _, at, domain = address.rpartition("@")
    return domain.strip() if at and domain.strip() else FALLBACK_MAIL_DOMAIN


def message_id(unique: str, *, sender: str) -> str:
    """A Message-ID made from `unique` (dot-atom characters), the same every time it is made:
    a message sent twice carries the same id, which mail systems recognise as a repeat."""
    return f"<{unique}@{mail_domain(sender)}>"


def _fill_in_headers(message: EmailMessage) -> None:
    if message["Date"] is None:
        message["Date"] = format_datetime(datetime.now(UTC))
    if message["Message-ID"] is None:
        message["Message-ID"] = make_msgid(domain=mail_domain(str(message["From"] or "")))


def _log_sent(message: EmailMessage, transport: str) -> None:
    logger.info(
        "email sent", to=str(message["To"]), subject=str(message["Subject"]), transport=transport
    )


class SmtpMailer:
    """One connection per message: welcome emails and the like are too rare to keep one open."""

    def __init__(self, server: SmtpServer, *, tls_context: ssl.SSLContext | None = None) -> None:
        self.server = server
        # The system's CAs unless given a context (a private CA, say).
        self._tls_context = tls_context

    async def send(self, message: EmailMessage) -> None:
        _fill_in_headers(message)
        server = self.server
        client = aiosmtplib.SMTP(
            hostname=server.host,
            port=server.port,
            use_tls=server.implicit_tls,
            # None: upgrade when the server offers STARTTLS. Implicit TLS has nothing to upgrade.
            start_tls=False if server.implicit_tls else None,
            tls_context=self._tls_context or _system_tls_context(),
            timeout=server.timeout_seconds,
        )
        async with client:
            if server.username is not None and server.password is not None:
                if client.get_transport_info("sslcontext") is None:
                    raise InsecureSmtpServer(
                        "the SMTP server offers no STARTTLS; refusing to send the password "
                        "unencrypted (use smtps:// or a server with STARTTLS)"
                    )
                await client.login(server.username, server.password)
            refused, _ = await client.send_message(message)
        if refused:
            # Some recipients were accepted: retrying would send them a second copy.
            logger.warning(
                "email refused for some recipients",
                refused=sorted(refused),
                subject=str(message["Subject"]),
            )
        _log_sent(message, "smtp")


class FolderMailer:
    """Writes each message to `folder` as `<UTC time>-<random>.eml`: the names sort by time
    and never collide, and a file appears whole or not at all."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    async def send(self, message: EmailMessage) -> None:
        _fill_in_headers(message)
        # Plain newlines rather than SMTP's CRLF: mail programs open either, and a person
        # reading the file in an editor or a terminal sees no stray carriage returns.
        content = message.as_bytes(policy=email.policy.default)
        await asyncio.to_thread(self._write, content)
        _log_sent(message, "folder")

    def _write(self, content: bytes) -> None:
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = f"{datetime.now(UTC):%Y%m%dT%H%M%S.%fZ}-{secrets.token_hex(8)}.eml"
        target = self.folder / name
        # Hidden and not `.eml`: readers looking for messages skip it until it is renamed.
        temporary = self.folder / f".{name}.tmp"
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
                handle.flush()
                # On disk before the job that sent it commits as done.
                os.fsync(handle.fileno())
            os.replace(temporary, target)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _sync_folder(self.folder)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every platform can open a folder to sync it."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(descriptor)
    finally:
        os.close(descriptor)


def create_mailer(settings: Settings, *, tls_context: ssl.SSLContext | None = None) -> Mailer:
    """SMTP to SMTP_URL when it is set, else the mail folder."""
    if settings.smtp_url is not None:
        return SmtpMailer(parse_smtp_url(settings.smtp_url), tls_context=tls_context)
    return FolderMailer(settings.mail_folder)

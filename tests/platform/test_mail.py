"""The mailer against a real SMTP server (aiosmtpd on 127.0.0.1: plain, STARTTLS, implicit TLS,
with and without AUTH, certificates from a throwaway CA), and the folder transport."""

import asyncio
import json
import logging
import os
import shutil
import socket
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from conduit.platform.mail import (
    DEFAULT_SMTP_TIMEOUT_SECONDS,
    FolderMailer,
    InsecureSmtpServer,
    MailConfigurationError,
    SmtpMailer,
    SmtpServer,
    create_mailer,
    message_id,
    parse_smtp_url,
)
from conduit.platform.observability.logging import configure_logging
from conduit.platform.settings import Environment, LogFormat, LogLevel, Settings

pytestmark = pytest.mark.anyio

LOCALHOST = "127.0.0.1"
USER = "mailer@conduit.example"
# Every character that needs percent-encoding in a URL's user information.
PASSWORD = "p@ss:w/rd%?#"
ENCODED_USER = "mailer%40conduit.example"
ENCODED_PASSWORD = "p%40ss%3Aw%2Frd%25%3F%23"


def free_port() -> int:
    """A port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind((LOCALHOST, 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass(frozen=True)
class Received:
    """One message as the SMTP server took it."""

    mail_from: str
    rcpt_tos: list[str]
    content: bytes
    encrypted: bool
    authenticated_as: str | None

    @property
    def message(self) -> EmailMessage:
        parsed = BytesParser(policy=policy.default).parsebytes(self.content)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class SmtpTestServer:
    """A real SMTP server in a thread; records each message, and every login attempted."""

    port: int
    credentials: tuple[str, str] | None = None
    received: list[Received] = field(default_factory=list)
    login_attempts: list[tuple[str, str]] = field(default_factory=list)

    def url(self, scheme: str = "smtp", userinfo: str = "", query: str = "") -> str:
        return f"{scheme}://{userinfo}{LOCALHOST}:{self.port}{query}"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        assert server.transport is not None
        assert isinstance(envelope.content, bytes)
        self.received.append(
            Received(
                mail_from=envelope.mail_from or "",
                rcpt_tos=list(envelope.rcpt_tos),
                content=envelope.content,
                encrypted=server.transport.get_extra_info("sslcontext") is not None,
                authenticated_as=session.auth_data if session.authenticated else None,
            )
        )
        return "250 Message accepted"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        assert isinstance(data, LoginPassword)
        login, password = data.login.decode(), data.password.decode()
        self.login_attempts.append((login, password))
        # Not "handled": aiosmtpd answers the client itself, success or failure.
        return AuthResult(
            success=(login, password) == self.credentials, handled=False, auth_data=login
        )


@contextmanager
def smtp_server(
    *,
    port: int | None = None,
    starttls: ssl.SSLContext | None = None,
    implicit_tls: ssl.SSLContext | None = None,
    credentials: tuple[str, str] | None = None,
    auth_require_tls: bool = True,
) -> Iterator[SmtpTestServer]:
    for attempt in range(3):
        server = SmtpTestServer(port or free_port(), credentials)
        options: dict[str, Any] = {}
        if credentials is not None:
            options.update(authenticator=server.authenticate, auth_require_tls=auth_require_tls)
        controller = Controller(
            server,
            hostname=LOCALHOST,
            port=server.port,
            tls_context=starttls,
            ssl_context=implicit_tls,
            **options,
        )
        try:
            controller.start()
            break
        except OSError:
            # Another process took the free port first; a given port gets no second chance.
            if port is not None or attempt == 2:
                raise
    try:
        yield server
    finally:
        controller.stop()


@dataclass(frozen=True)
class Certificates:
    """A throwaway CA and a certificate it signed for 127.0.0.1."""

    folder: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.folder / "server.pem", self.folder / "server.key")
        return context

    def client_context(self) -> ssl.SSLContext:
        """Trusts the throwaway CA only, verifying the host name as production does."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        context.load_verify_locations(self.folder / "ca.pem")
        return context


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the TLS tests make their certificates with the openssl command")
    folder = tmp_path_factory.mktemp("smtp-tls")

    def run(*arguments: str) -> None:
        subprocess.run([openssl, *arguments], cwd=folder, check=True, capture_output=True)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    run(
        "req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=Conduit test CA",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    run("req", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (folder / "server.ext").write_text(
        "basicConstraints=critical,CA:FALSE\n"
        "keyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1\n"
        "authorityKeyIdentifier=keyid\n"
        "subjectKeyIdentifier=hash\n"
    )
    run(
        "x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.pem", "-days", "2", "-extfile", "server.ext",
    )  # fmt: skip
    return Certificates(folder)


def a_message(subject: str = "Hello", to: str = "reader@example.com") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Conduit <no-reply@conduit.example>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content("Héllo, wörld.\n")
    return message


def smtp_mailer(url: str, certificates: Certificates | None = None) -> SmtpMailer:
    context = certificates.client_context() if certificates else None
    return SmtpMailer(parse_smtp_url(url), tls_context=context)


class TestSmtpUrl:
    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("smtp://mail.example.com", SmtpServer("mail.example.com", 587, implicit_tls=False)),
            ("SMTP://mail.example.com:2525/", SmtpServer("mail.example.com", 2525, False)),
            ("smtps://mail.example.com", SmtpServer("mail.example.com", 465, implicit_tls=True)),
            ("smtp://[::1]:1025", SmtpServer("::1", 1025, implicit_tls=False)),
            (
                f"smtps://{ENCODED_USER}:{ENCODED_PASSWORD}@mail.example.com:4650?timeout=2.5",
                SmtpServer("mail.example.com", 4650, True, USER, PASSWORD, timeout_seconds=2.5),
            ),
        ],
    )
    def test_forms(self, url: str, expected: SmtpServer) -> None:
        assert parse_smtp_url(url) == expected

    def test_default_timeout(self) -> None:
        assert parse_smtp_url("smtp://host").timeout_seconds == DEFAULT_SMTP_TIMEOUT_SECONDS

    @pytest.mark.parametrize(
        ("url", "complaint"),
        [
            (f"http://user:{ENCODED_PASSWORD}@host", "smtp:// or smtps://"),
            ("mail.example.com:25", "smtp:// or smtps://"),
            (f"smtp://user:{ENCODED_PASSWORD}@", "no host"),
            (f"smtp://user:{ENCODED_PASSWORD}@host:99999", "invalid port"),
            (f"smtp://user:{ENCODED_PASSWORD}@host/path", "no path"),
            ("smtp://user@host", "both a user name and a password"),
            (f"smtp://:{ENCODED_PASSWORD}@host", "both a user name and a password"),
            (f"smtp://user:{ENCODED_PASSWORD}@host?tls=off", "unknown parameter 'tls'"),
            (f"smtp://user:{ENCODED_PASSWORD}@host?timeout=soon", "timeout"),
            (f"smtp://user:{ENCODED_PASSWORD}@host?timeout=0", "timeout"),
        ],
    )
    def test_refused_without_repeating_the_password(self, url: str, complaint: str) -> None:
        with pytest.raises(MailConfigurationError, match="SMTP_URL") as raised:
            parse_smtp_url(url)
        assert complaint in str(raised.value)
        assert ENCODED_PASSWORD not in str(raised.value)
        assert PASSWORD not in str(raised.value)

    def test_the_password_stays_out_of_the_repr(self) -> None:
        server = parse_smtp_url(f"smtp://{ENCODED_USER}:{ENCODED_PASSWORD}@host")
        assert PASSWORD not in repr(server)
        assert USER in repr(server)


class TestSmtp:
    async def test_plain_server_gets_envelope_and_message(self) -> None:
        with smtp_server() as server:
            await smtp_mailer(server.url()).send(a_message("Plain", to="Ann <ann@example.com>"))
        [received] = server.received
        assert received.mail_from == "no-reply@conduit.example"
        assert received.rcpt_tos == ["ann@example.com"]
        assert not received.encrypted
        message = received.message
        assert message["Subject"] == "Plain"
        assert message["To"] == "Ann <ann@example.com>"
        # SMTP carries CRLF line endings.
        assert message.get_content() == "Héllo, wörld.\r\n"
        # Filled in by the mailer: every message leaves with both.
        assert message["Date"] is not None
        assert message["Message-ID"].endswith("@conduit.example>")

    async def test_bcc_is_delivered_but_not_shown(self) -> None:
        message = a_message()
        message["Bcc"] = "hidden@example.com"
        with smtp_server() as server:
            await smtp_mailer(server.url()).send(message)
        [received] = server.received
        assert sorted(received.rcpt_tos) == ["hidden@example.com", "reader@example.com"]
        assert received.message["Bcc"] is None

    async def test_starttls_is_used_when_offered(self, certificates: Certificates) -> None:
        with smtp_server(starttls=certificates.server_context()) as server:
            await smtp_mailer(server.url(), certificates).send(a_message())
        [received] = server.received
        assert received.encrypted

    async def test_login_over_starttls_with_decoded_credentials(
        self, certificates: Certificates
    ) -> None:
        with smtp_server(
            starttls=certificates.server_context(), credentials=(USER, PASSWORD)
        ) as server:
            url = server.url(userinfo=f"{ENCODED_USER}:{ENCODED_PASSWORD}@")
            await smtp_mailer(url, certificates).send(a_message())
        [received] = server.received
        assert received.encrypted
        assert received.authenticated_as == USER

    async def test_login_over_implicit_tls(self, certificates: Certificates) -> None:
        # aiosmtpd only counts STARTTLS as TLS when deciding to offer AUTH.
        with smtp_server(
            implicit_tls=certificates.server_context(),
            credentials=(USER, PASSWORD),
            auth_require_tls=False,
        ) as server:
            url = server.url("smtps", userinfo=f"{ENCODED_USER}:{ENCODED_PASSWORD}@")
            await smtp_mailer(url, certificates).send(a_message())
        [received] = server.received
        assert received.encrypted
        assert received.authenticated_as == USER

    async def test_wrong_password_raises(self, certificates: Certificates) -> None:
        with smtp_server(
            starttls=certificates.server_context(), credentials=(USER, PASSWORD)
        ) as server:
            url = server.url(userinfo=f"{ENCODED_USER}:wrong@")
            with pytest.raises(aiosmtplib.SMTPAuthenticationError):
                await smtp_mailer(url, certificates).send(a_message())
        assert server.received == []

    async def test_password_is_never_sent_unencrypted(self) -> None:
        # This server would accept a login in clear text; the mailer must not offer one.
        with smtp_server(credentials=(USER, PASSWORD), auth_require_tls=False) as server:
            url = server.url(userinfo=f"{ENCODED_USER}:{ENCODED_PASSWORD}@")
            with pytest.raises(InsecureSmtpServer, match="STARTTLS"):
                await smtp_mailer(url).send(a_message())
        assert server.login_attempts == []
        assert server.received == []

    async def test_untrusted_certificate_is_refused_not_downgraded(
        self, certificates: Certificates
    ) -> None:
        # The system's CAs do not know the throwaway one.
        with (
            smtp_server(starttls=certificates.server_context()) as server,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            await smtp_mailer(server.url()).send(a_message())
        assert server.received == []

    async def test_certificate_must_name_the_host(self, certificates: Certificates) -> None:
        # Valid for 127.0.0.1, not for "localhost".
        with smtp_server(starttls=certificates.server_context()) as server:
            url = f"smtp://localhost:{server.port}"
            with pytest.raises(ssl.SSLCertVerificationError, match="localhost"):
                await smtp_mailer(url, certificates).send(a_message())
        assert server.received == []

    async def test_unreachable_server_raises(self) -> None:
        with pytest.raises(aiosmtplib.SMTPConnectError):
            await smtp_mailer(f"smtp://{LOCALHOST}:{free_port()}").send(a_message())

    async def test_silent_server_times_out(self) -> None:
        async def accept_and_say_nothing(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter
        ) -> None:
            await reader.read()
            writer.close()

        silent = await asyncio.start_server(accept_and_say_nothing, LOCALHOST, 0)
        port = silent.sockets[0].getsockname()[1]
        started = time.monotonic()
        try:
            with pytest.raises(aiosmtplib.SMTPTimeoutError):
                await smtp_mailer(f"smtp://{LOCALHOST}:{port}?timeout=0.3").send(a_message())
        finally:
            silent.close()
        assert time.monotonic() - started < 5

    async def test_logs_recipient_and_subject_never_the_password(
        self, certificates: Certificates, capsys: pytest.CaptureFixture[str]
    ) -> None:
        root = logging.getLogger()
        handlers, level = root.handlers[:], root.level
        # The process's logging as `conduit serve` sets it up, in JSON on stderr.
        configure_logging(
            Settings(
                _env_file=None,
                environment=Environment.test,
                log_format=LogFormat.json,
                log_level=LogLevel.DEBUG,
            )
        )
        capsys.readouterr()
        try:
            with smtp_server(
                starttls=certificates.server_context(), credentials=(USER, PASSWORD)
            ) as server:
                url = server.url(userinfo=f"{ENCODED_USER}:{ENCODED_PASSWORD}@")
                await smtp_mailer(url, certificates).send(a_message("Logged"))
                bad = smtp_mailer(
                    server.url(userinfo=f"{ENCODED_USER}:{ENCODED_PASSWORD}x@"), certificates
                )
                with pytest.raises(aiosmtplib.SMTPAuthenticationError) as failed:
                    await bad.send(a_message())
            output = capsys.readouterr().err
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
        lines = [json.loads(line) for line in output.splitlines() if line]
        [sent] = [line for line in lines if line["event"] == "email sent"]
        assert sent["to"] == "reader@example.com"
        assert sent["subject"] == "Logged"
        assert sent["transport"] == "smtp"
        for text in (output, str(failed.value)):
            assert PASSWORD not in text
            assert ENCODED_PASSWORD not in text


def folder_contents(folder: Path) -> list[Path]:
    """Every entry of `folder`, hidden ones included, in name order."""
    return sorted(folder.iterdir())


def read_mail(path: Path) -> EmailMessage:
    message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
    assert isinstance(message, EmailMessage)
    return message


class TestFolder:
    async def test_each_message_is_a_parseable_eml_file(self, tmp_path: Path) -> None:
        folder = tmp_path / "mail"
        mailer = FolderMailer(folder)
        for subject in ("first", "second", "third"):
            await mailer.send(a_message(subject))
        files = folder_contents(folder)
        assert [path.suffix for path in files] == [".eml"] * 3
        messages = [read_mail(path) for path in files]
        # The names sort in the order the messages were sent.
        assert [message["Subject"] for message in messages] == ["first", "second", "third"]
        first = messages[0]
        assert first["To"] == "reader@example.com"
        assert first["From"] == "Conduit <no-reply@conduit.example>"
        assert first.get_content() == "Héllo, wörld.\n"
        assert first["Date"] is not None
        assert first["Message-ID"] is not None
        # Readable in an editor: plain newlines, no SMTP line endings.
        assert b"\r\n" not in files[0].read_bytes()

    async def test_only_the_owner_may_read_them(self, tmp_path: Path) -> None:
        if os.name != "posix":
            pytest.skip("file modes are POSIX")
        mailer = FolderMailer(tmp_path / "mail")
        await mailer.send(a_message())
        [path] = folder_contents(tmp_path / "mail")
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    async def test_concurrent_messages_never_collide(self, tmp_path: Path) -> None:
        mailer = FolderMailer(tmp_path)
        await asyncio.gather(*(mailer.send(a_message(f"message {n}")) for n in range(30)))
        files = folder_contents(tmp_path)
        # All whole, none lost to another's name, no temporary file left behind.
        assert len(files) == 30
        assert all(path.suffix == ".eml" and not path.name.startswith(".") for path in files)
        subjects = {read_mail(path)["Subject"] for path in files}
        assert subjects == {f"message {n}" for n in range(30)}

    async def test_unwritable_folder_raises_and_leaves_nothing(self, tmp_path: Path) -> None:
        blocker = tmp_path / "mail"
        blocker.write_bytes(b"a file where the folder should be")
        with pytest.raises(OSError):  # noqa: PT011 (which one depends on the platform)
            await FolderMailer(blocker).send(a_message())
        assert folder_contents(tmp_path) == [blocker]

    async def test_keeps_the_message_id_and_date_it_is_given(self, tmp_path: Path) -> None:
        message = a_message()
        message["Message-ID"] = "<fixed@conduit.example>"
        message["Date"] = "Mon, 02 Nov 2026 10:00:00 +0000"
        await FolderMailer(tmp_path).send(message)
        [path] = folder_contents(tmp_path)
        stored = read_mail(path)
        assert stored["Message-ID"] == "<fixed@conduit.example>"
        assert stored["Date"] == "Mon, 02 Nov 2026 10:00:00 +0000"


class TestChoosingTheTransport:
    async def test_folder_when_no_smtp_url(self, settings: Settings, tmp_path: Path) -> None:
        mail_folder = tmp_path / "outbox"
        mailer = create_mailer(settings.model_copy(update={"mail_dir": mail_folder}))
        assert isinstance(mailer, FolderMailer)
        await mailer.send(a_message())
        [path] = folder_contents(mail_folder)
        assert path.suffix == ".eml"

    async def test_default_folder_is_in_the_data_dir(self, settings: Settings) -> None:
        mailer = create_mailer(settings)
        assert isinstance(mailer, FolderMailer)
        assert mailer.folder == settings.data_dir / "mail"

    async def test_smtp_when_smtp_url_is_set(self, settings: Settings) -> None:
        with smtp_server() as server:
            mailer = create_mailer(settings.model_copy(update={"smtp_url": server.url()}))
            assert isinstance(mailer, SmtpMailer)
            await mailer.send(a_message())
        assert len(server.received) == 1

    def test_message_id_uses_the_senders_domain(self) -> None:
        assert message_id("a.b", sender="Conduit <x@mail.example>") == "<a.b@mail.example>"
        assert message_id("a.b", sender="nonsense") == "<a.b@conduit.localhost>"

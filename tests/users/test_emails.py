"""The welcome email: registering through the API queues it, the job sends it (to the mail
folder by default, or to a real SMTP server), and a failed send leaves the job to be retried."""

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import parseaddr

import aiosmtplib
import httpx
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.settings import Settings
from conduit.users.emails import welcome_message
from conduit.users.models import User
from tests.helpers import Account, register
from tests.jobs import JobRunner
from tests.platform.test_mail import LOCALHOST, SmtpTestServer, free_port, smtp_server

pytestmark = pytest.mark.anyio

WELCOME = "users.send_welcome_email"
PUBLIC_URL = "https://conduit.example/"


async def registration_event(session: AsyncSession, account: Account) -> uuid.UUID:
    user_id = await session.scalar(select(User.id).where(User.username == account.username))
    event_id = await session.scalar(
        text(
            "SELECT id FROM domain_event "
            "WHERE type = 'user.registered' AND (data ->> 'user_id')::bigint = :user_id"
        ),
        {"user_id": user_id},
    )
    assert isinstance(event_id, uuid.UUID)
    return event_id


def mails_in(settings: Settings) -> list[EmailMessage]:
    folder = settings.mail_folder
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    messages = []
    for path in files:
        message = BytesParser(policy=policy.default).parsebytes(path.read_bytes())
        assert isinstance(message, EmailMessage)
        messages.append(message)
    return messages


def parts(message: EmailMessage) -> tuple[str, str]:
    """The plain-text and HTML bodies."""
    plain, html = message.get_body(("plain",)), message.get_body(("html",))
    assert isinstance(plain, EmailMessage)
    assert isinstance(html, EmailMessage)
    return plain.get_content(), html.get_content()


async def handled(session: AsyncSession, event_id: uuid.UUID) -> bool:
    count = await session.scalar(
        text("SELECT count(*) FROM event_handling WHERE event_id = :id AND handler = :handler"),
        {"id": event_id, "handler": WELCOME},
    )
    return count == 1


class TestToTheMailFolder:
    async def test_registering_sends_a_welcome_email(
        self,
        client: httpx.AsyncClient,
        jobs: JobRunner,
        session: AsyncSession,
        settings: Settings,
    ) -> None:
        account = await register(client)
        event_id = await registration_event(session, account)
        assert WELCOME in await jobs.queued()
        # Sent by the job, never by the request.
        assert mails_in(settings) == []

        assert WELCOME in await jobs.run_all()

        [message] = mails_in(settings)
        assert message["To"].addresses[0].addr_spec == account.email
        assert message["To"].addresses[0].display_name == account.username
        assert message["From"] == settings.mail_from
        assert account.username in message["Subject"]
        assert message["Message-ID"] == f"<welcome.{event_id}@conduit.localhost>"
        sent_at = message["Date"].datetime
        assert abs(datetime.now(UTC) - sent_at) < timedelta(minutes=5)
        assert message["Auto-Submitted"] == "auto-generated"
        plain, html = parts(message)
        assert account.username in plain
        assert settings.public_url in plain
        assert f'href="{settings.public_url}"' in html
        assert await handled(session, event_id)

    async def test_each_account_gets_its_own(
        self, client: httpx.AsyncClient, jobs: JobRunner, settings: Settings
    ) -> None:
        accounts = [await register(client) for _ in range(2)]
        await jobs.run_all()
        messages = mails_in(settings)
        assert sorted(m["To"].addresses[0].addr_spec for m in messages) == sorted(
            a.email for a in accounts
        )
        assert len({m["Message-ID"] for m in messages}) == 2

    async def test_no_email_for_an_account_gone_before_the_job_ran(
        self,
        client: httpx.AsyncClient,
        jobs: JobRunner,
        session: AsyncSession,
        settings: Settings,
    ) -> None:
        account = await register(client)
        event_id = await registration_event(session, account)
        await session.execute(
            text("DELETE FROM user_account WHERE username = :username"),
            {"username": account.username},
        )
        assert WELCOME in await jobs.run_all()
        assert mails_in(settings) == []
        assert await handled(session, event_id)


class TestOverSmtp:
    @pytest.fixture
    def smtp(self) -> Iterator[SmtpTestServer]:
        with smtp_server() as server:
            yield server

    @pytest.fixture
    def settings(self, settings: Settings, smtp: SmtpTestServer) -> Settings:
        return settings.model_copy(
            update={
                "smtp_url": smtp.url(),
                "mail_from": "Conduit <hello@conduit.example>",
                "public_url": PUBLIC_URL,
            }
        )

    async def test_the_welcome_email_reaches_the_server(
        self,
        client: httpx.AsyncClient,
        jobs: JobRunner,
        session: AsyncSession,
        settings: Settings,
        smtp: SmtpTestServer,
    ) -> None:
        account = await register(client)
        event_id = await registration_event(session, account)
        await jobs.run_all()

        [received] = smtp.received
        assert received.mail_from == "hello@conduit.example"
        assert received.rcpt_tos == [account.email]
        message = received.message
        assert message["From"] == "Conduit <hello@conduit.example>"
        assert message["Message-ID"] == f"<welcome.{event_id}@conduit.example>"
        plain, html = parts(message)
        assert PUBLIC_URL in plain
        assert f'href="{PUBLIC_URL}"' in html
        # Nothing went to the folder.
        assert mails_in(settings) == []


class TestWhenTheServerIsDown:
    @pytest.fixture
    def port(self) -> int:
        return free_port()

    @pytest.fixture
    def settings(self, settings: Settings, port: int) -> Settings:
        return settings.model_copy(update={"smtp_url": f"smtp://{LOCALHOST}:{port}"})

    async def test_the_job_fails_and_is_kept_for_a_retry(
        self,
        client: httpx.AsyncClient,
        jobs: JobRunner,
        session: AsyncSession,
        port: int,
    ) -> None:
        account = await register(client)
        event_id = await registration_event(session, account)

        with pytest.raises(aiosmtplib.SMTPConnectError):
            await jobs.run_all()
        # Rolled back: still queued, and not recorded as handled.
        assert WELCOME in await jobs.queued()
        assert not await handled(session, event_id)

        with smtp_server(port=port) as server:
            assert WELCOME in await jobs.run_all()
        [received] = server.received
        assert received.rcpt_tos == [account.email]
        assert await handled(session, event_id)


def test_a_repeated_send_carries_the_same_message_id(settings: Settings) -> None:
    user = User(username="ann", email="ann@example.com", password_hash="")
    event_id = uuid.uuid4()
    first, second = (
        welcome_message(user=user, event_id=event_id, settings=settings) for _ in range(2)
    )
    assert first["Message-ID"] == second["Message-ID"]
    other = welcome_message(user=user, event_id=uuid.uuid4(), settings=settings)
    assert other["Message-ID"] != first["Message-ID"]
    assert parseaddr(str(first["To"])) == ("ann", "ann@example.com")

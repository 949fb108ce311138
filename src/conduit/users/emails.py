"""Emails to users: the welcome email sent after registration."""

import html
import uuid
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

import structlog

from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.registry import Event, subscribe
from conduit.platform.mail import create_mailer, message_id
from conduit.platform.settings import Settings
from conduit.users.models import User

logger = structlog.stdlib.get_logger(__name__)


def welcome_message(*, user: User, event_id: uuid.UUID, settings: Settings) -> EmailMessage:
    """The welcome email for `user`, registered by event `event_id`."""
    link = settings.public_url
    message = EmailMessage()
    message["From"] = settings.mail_from
    message["To"] = Address(display_name=user.username, addr_spec=user.email)
    message["Subject"] = f"Welcome to Conduit, {user.username}"
    message["Date"] = format_datetime(datetime.now(UTC))
    # The same for every delivery of this event: a repeated send is recognisably a repeat.
    message["Message-ID"] = message_id(f"welcome.{event_id}", sender=settings.mail_from)
    # RFC 3834: written by a program, so auto-responders do not answer it.
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"Hello {user.username},\n"
        "\n"
        "Welcome to Conduit! Your account is ready. Sign in to follow authors, favorite\n"
        "articles and publish your own:\n"
        "\n"
        f"{link}\n"
        "\n"
        "You received this email because this address was used to create a Conduit account.\n"
        "If that was not you, you can ignore it.\n"
        "\n"
        "The Conduit team\n"
    )
    name, href = html.escape(user.username), html.escape(link, quote=True)
    message.add_alternative(
        "<!DOCTYPE html>\n"
        '<html><body style="font-family: sans-serif; line-height: 1.5">\n'
        f"<p>Hello {name},</p>\n"
        "<p>Welcome to Conduit! Your account is ready. Sign in to follow authors, favorite "
        "articles and publish your own:</p>\n"
        f'<p><a href="{href}">{href}</a></p>\n'
        "<p>You received this email because this address was used to create a Conduit "
        "account. If that was not you, you can ignore it.</p>\n"
        "<p>The Conduit team</p>\n"
        "</body></html>\n",
        subtype="html",
    )
    return message


@subscribe("users.send_welcome_email", "user.registered")
async def send_welcome_email(context: JobContext, event: Event) -> None:
    """Raises when the mail server cannot take the message, so the job is retried."""
    user = await context.session.get(User, event.data["user_id"])
    if user is None:
        logger.info("no welcome email: the account no longer exists", event_id=str(event.id))
        return
    message = welcome_message(user=user, event_id=event.id, settings=context.settings)
    await create_mailer(context.settings).send(message)

"""The event handlers that write notifications, and announce them on the live channel once
their transaction has committed: a stream never shows a notification that was rolled back,
and one that fails to reach the live channel is still in the list."""

from collections.abc import Sequence

import structlog

from conduit.notifications import service
from conduit.notifications.service import LiveMessage
from conduit.notifications.stream import publish_after_commit
from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.registry import Event, subscribe

logger = structlog.stdlib.get_logger(__name__)


@subscribe("notifications.article_published", "article.published")
async def article_published(context: JobContext, event: Event) -> None:
    messages = await service.article_published(
        context.session, article_id=int(event.data["article_id"]), occurred_at=event.occurred_at
    )
    _announce(context, event, messages)


@subscribe("notifications.comment_created", "comment.created")
async def comment_created(context: JobContext, event: Event) -> None:
    messages = await service.comment_created(
        context.session, comment_id=int(event.data["comment_id"]), occurred_at=event.occurred_at
    )
    _announce(context, event, messages)


@subscribe("notifications.user_followed", "user.followed")
async def user_followed(context: JobContext, event: Event) -> None:
    messages = await service.user_followed(
        context.session,
        follower_id=int(event.data["follower_id"]),
        followee_id=int(event.data["followee_id"]),
        occurred_at=event.occurred_at,
    )
    _announce(context, event, messages)


@subscribe("notifications.article_favorited", "article.favorited")
async def article_favorited(context: JobContext, event: Event) -> None:
    messages = await service.article_favorited(
        context.session,
        article_id=int(event.data["article_id"]),
        user_id=int(event.data["user_id"]),
        occurred_at=event.occurred_at,
    )
    _announce(context, event, messages)


def _announce(context: JobContext, event: Event, messages: Sequence[LiveMessage]) -> None:
    if not messages:
        # The article, comment, follow or favorite is gone, or it notifies nobody.
        logger.debug("no notification", event_type=event.type, event_id=str(event.id))
    publish_after_commit(context.session, context.resources.live, messages)

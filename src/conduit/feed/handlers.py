"""The jobs that keep the feed read model: an article's publication and a follow or unfollow
update the rows; a switch between fan-out on write and on read is finished in batches by
`feed.settle_author`.

A deleted article needs no job: its rows go with it (ON DELETE CASCADE), in the transaction
that deletes it; so do a deleted account's rows, as follower or through its articles.
"""

from conduit.feed import service
from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.queue import enqueue
from conduit.platform.jobs.registry import Event, JsonObject, job, subscribe

SETTLE_AUTHOR = "feed.settle_author"


@subscribe("feed.fan_out_article", "article.published")
async def fan_out_article(context: JobContext, event: Event) -> None:
    author_id = int(event.data["author_id"])
    unsettled = await service.article_published(
        context.session,
        article_id=int(event.data["article_id"]),
        author_id=author_id,
        threshold=context.settings.feed_fanout_max_followers,
    )
    if unsettled:
        await enqueue(context.session, SETTLE_AUTHOR, {"author_id": author_id})


@subscribe("feed.follow_changed", "user.followed", "user.unfollowed")
async def follow_changed(context: JobContext, event: Event) -> None:
    author_id = int(event.data["followee_id"])
    unsettled = await service.follow_changed(
        context.session,
        follower_id=int(event.data["follower_id"]),
        author_id=author_id,
        threshold=context.settings.feed_fanout_max_followers,
    )
    if unsettled:
        await enqueue(context.session, SETTLE_AUTHOR, {"author_id": author_id})


@job(SETTLE_AUTHOR)
async def settle_author(context: JobContext, payload: JsonObject) -> None:
    """One batch per run, each its own transaction, so that switching a much-followed author
    never holds one long transaction; the next batch is queued by the one before."""
    author_id = int(payload["author_id"])
    if await service.settle(context.session, author_id=author_id):
        await enqueue(context.session, SETTLE_AUTHOR, {"author_id": author_id})

"""Keeping the feed read model: what each event does to the rows, and when an author switches
between fan-out on write and fan-out on read.

Every function here runs in a job's transaction and starts by locking the author's feed state,
so the jobs touching one author run one at a time, and each reads the follows and articles as
they are when it holds the lock. Each function brings the rows in line with that current
state rather than replaying its event, which makes it idempotent and indifferent to the order
events are handled in: whichever job runs last after a change sees that change.

Switching modes never leaves a feed without an article or with one twice:

- on write -> on read: one statement (the mode); from then on feeds read the author's articles
  and ignore their rows, which `settle` deletes in batches afterwards.
- on read -> backfilling: one statement; rows are written for new articles and followers
  again, while `settle` writes the rows of the articles published in the meantime, in batches.
  Feeds keep reading the articles until the batch that writes the last rows switches the
  author to on write, in the same transaction.

An author switches to fan-out on read when they have more than FEED_FANOUT_MAX_FOLLOWERS
followers, and back when they are down to 90% of it, so that an author hovering around the
threshold does not trigger a backfill with every follow.
"""

from sqlalchemy.ext.asyncio import AsyncSession

from conduit.feed import repository
from conduit.feed.models import FanOut
from conduit.feed.repository import AuthorState

# How many rows one `settle` batch writes or deletes, at most (one article at least).
SETTLE_BATCH_ROWS = 10_000
# Back to fan-out on write at `threshold - threshold // HYSTERESIS_DIVISOR` followers.
HYSTERESIS_DIVISOR = 10


def wanted_mode(current: FanOut, *, followers: int, threshold: int) -> FanOut:
    if followers > threshold:
        return FanOut.on_read
    if current is FanOut.on_read:
        if followers > threshold - threshold // HYSTERESIS_DIVISOR:
            return FanOut.on_read
        return FanOut.backfilling
    return current


async def _reconsider(
    session: AsyncSession, author_id: int, state: AuthorState, threshold: int
) -> tuple[AuthorState, bool]:
    """Switch the (locked) author's mode if their follower count asks for it; the second value
    says whether rows are now left to write or delete (a `settle` job must follow)."""
    followers = await repository.count_followers(session, author_id, up_to=threshold + 1)
    mode = wanted_mode(state.mode, followers=followers, threshold=threshold)
    if mode is state.mode:
        return state, False
    await repository.set_mode(session, author_id, mode, settled=False)
    return AuthorState(mode=mode, settled=False, cursor=None), True


async def article_published(
    session: AsyncSession, *, article_id: int, author_id: int, threshold: int
) -> bool:
    """Write the article into its author's followers' feeds, unless they are read from
    `article`. True when a `settle` job must follow."""
    state = await repository.lock_author(session, author_id)
    if state is None:
        return False
    state, unsettled = await _reconsider(session, author_id, state, threshold)
    if state.mode.writes_rows:
        await repository.write_rows_for_articles(session, [article_id])
    return unsettled


async def follow_changed(
    session: AsyncSession, *, follower_id: int, author_id: int, threshold: int
) -> bool:
    """Make the follower's rows of the author agree with whether they follow them now: all the
    author's articles when they do (and the author's rows are written), none when they don't.
    True when a `settle` job must follow."""
    state = await repository.lock_author(session, author_id)
    if state is None:
        return False
    state, unsettled = await _reconsider(session, author_id, state, threshold)
    if await repository.is_following(session, follower_id=follower_id, author_id=author_id):
        if state.mode.writes_rows:
            await repository.write_follower_rows(
                session, follower_id=follower_id, author_id=author_id
            )
    else:
        await repository.delete_follower_rows(session, follower_id=follower_id, author_id=author_id)
    return unsettled


async def settle(session: AsyncSession, *, author_id: int) -> bool:
    """One batch of the work a mode switch left: writing the rows of the author's articles for
    their followers (backfilling), or deleting them (on read). True while work remains."""
    state = await repository.lock_author(session, author_id)
    if state is None or state.settled or state.mode is FanOut.on_write:
        return False
    followers = await repository.count_followers(session, author_id, up_to=SETTLE_BATCH_ROWS)
    per_batch = max(1, SETTLE_BATCH_ROWS // max(1, followers))
    batch = await repository.articles_before(session, author_id, state.cursor, limit=per_batch)
    article_ids = [article_id for _, article_id in batch]
    if state.mode is FanOut.backfilling:
        await repository.write_rows_for_articles(session, article_ids)
    else:
        await repository.delete_rows_for_articles(session, article_ids)
    if len(batch) < per_batch:
        done = FanOut.on_write if state.mode is FanOut.backfilling else FanOut.on_read
        await repository.set_mode(session, author_id, done, settled=True)
        return False
    await repository.advance_cursor(session, author_id, batch[-1])
    return True

"""Each kind of notification, written by the real handlers after real API calls, and what
happens when the thing it is about changes or disappears before or after."""

import asyncio
import json
from typing import Any

import httpx
import pytest
from fastapi import APIRouter, FastAPI
from sqlalchemy import func, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.notifications import handlers
from conduit.notifications.models import Notification
from conduit.notifications.service import topic
from conduit.platform.db.session import AutoCommitRoute, SessionDep, commit, discard_after_commit
from conduit.platform.errors import ValidationFailed
from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.registry import Event
from conduit.platform.live import LiveChannel, Subscription
from conduit.profiles import service as profiles_service
from conduit.users.dependencies import CurrentUser
from conduit.users.models import User
from tests.helpers import Account, create_article, favorite, follow, register, unfavorite, unfollow
from tests.jobs import JobRunner
from tests.notifications.helpers import comment, listing, notifications

pytestmark = pytest.mark.anyio


class TestArticlePublished:
    async def test_notifies_each_follower_of_the_author_and_nobody_else(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, fans, stranger = await register(client), [], await register(client)
        for _ in range(3):
            fan = await register(client)
            await follow(client, fan, author)
            fans.append(fan)
        await jobs.run_all()
        article = await create_article(client, author, title="Fresh news")
        assert "notifications.article_published" in await jobs.queued()
        await jobs.run_all()

        for fan in fans:
            [item] = await notifications(client, fan)
            assert item["kind"] == "article"
            assert item["actor"]["username"] == author.username
            assert item["actor"]["following"] is True
            assert item["article"] == {"slug": article["slug"], "title": "Fresh news"}
            assert item["comment"] is None
        assert await notifications(client, stranger) == []
        # The author has the follows, not their own article.
        assert {item["kind"] for item in await notifications(client, author)} == {"follow"}

    async def test_writes_nothing_when_the_article_is_gone(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, fan = await register(client), await register(client)
        await follow(client, fan, author)
        await jobs.run_all()
        article = await create_article(client, author)
        deleted = await client.delete(f"/articles/{article['slug']}", headers=author.headers)
        assert deleted.status_code == 204
        await jobs.run_all()
        assert await notifications(client, fan) == []


class TestCommentCreated:
    async def test_notifies_the_article_author(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, reader = await register(client), await register(client)
        article = await create_article(client, author, title="Open for comments")
        written = await comment(client, reader, article["slug"], body="Well put")
        await jobs.run_all()

        [item] = await notifications(client, author)
        assert item["kind"] == "comment"
        assert item["actor"]["username"] == reader.username
        assert item["article"] == {"slug": article["slug"], "title": "Open for comments"}
        assert item["comment"] == {"id": written["id"], "body": "Well put"}
        assert await notifications(client, reader) == []

    async def test_not_for_a_comment_on_your_own_article(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author = await register(client)
        article = await create_article(client, author)
        await comment(client, author, article["slug"])
        await jobs.run_all()
        assert await notifications(client, author) == []

    async def test_goes_with_its_comment(self, client: httpx.AsyncClient, jobs: JobRunner) -> None:
        author, reader = await register(client), await register(client)
        slug = (await create_article(client, author))["slug"]
        doomed = await comment(client, reader, slug)
        kept = await comment(client, reader, slug, body="Second thoughts")
        await jobs.run_all()
        assert len(await notifications(client, author)) == 2

        response = await client.delete(
            f"/articles/{slug}/comments/{doomed['id']}", headers=reader.headers
        )
        assert response.status_code == 204
        [item] = await notifications(client, author)
        assert item["comment"]["id"] == kept["id"]

    async def test_writes_nothing_when_the_comment_is_gone(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, reader = await register(client), await register(client)
        slug = (await create_article(client, author))["slug"]
        doomed = await comment(client, reader, slug)
        await client.delete(f"/articles/{slug}/comments/{doomed['id']}", headers=reader.headers)
        await jobs.run_all()
        assert await notifications(client, author) == []


class TestUserFollowed:
    async def test_notifies_the_followee_once_however_often_they_are_followed_again(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb, fan = await register(client), await register(client)
        await follow(client, fan, celeb)
        await jobs.run_all()
        await unfollow(client, fan, celeb)
        await follow(client, fan, celeb)
        await jobs.run_all()

        [item] = await notifications(client, celeb)
        assert item["kind"] == "follow"
        assert item["actor"]["username"] == fan.username
        assert await notifications(client, fan) == []

    async def test_writes_nothing_when_unfollowed_before_it_runs(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        celeb, fan = await register(client), await register(client)
        await follow(client, fan, celeb)
        await unfollow(client, fan, celeb)
        await jobs.run_all()
        assert await notifications(client, celeb) == []


class TestArticleFavorited:
    async def test_notifies_the_author_once_per_fan(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, fan = await register(client), await register(client)
        article = await create_article(client, author, title="Lovely")
        await favorite(client, fan, article["slug"])
        await jobs.run_all()
        await unfavorite(client, fan, article["slug"])
        await favorite(client, fan, article["slug"])
        await jobs.run_all()

        [item] = await notifications(client, author)
        assert item["kind"] == "favorite"
        assert item["actor"]["username"] == fan.username
        assert item["article"] == {"slug": article["slug"], "title": "Lovely"}
        assert item["comment"] is None

    async def test_not_for_favoriting_your_own_article(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author = await register(client)
        article = await create_article(client, author)
        await favorite(client, author, article["slug"])
        await jobs.run_all()
        assert await notifications(client, author) == []

    async def test_writes_nothing_when_unfavorited_before_it_runs(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, fan = await register(client), await register(client)
        slug = (await create_article(client, author))["slug"]
        await favorite(client, fan, slug)
        await unfavorite(client, fan, slug)
        await jobs.run_all()
        assert await notifications(client, author) == []


class TestCascades:
    async def test_deleting_an_article_deletes_its_notifications(
        self, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        author, fan = await register(client), await register(client)
        await follow(client, fan, author)
        await jobs.run_all()
        article = await create_article(client, author)
        await favorite(client, fan, article["slug"])
        await comment(client, fan, article["slug"])
        await jobs.run_all()
        assert {item["kind"] for item in await notifications(client, author)} == {
            "follow",
            "favorite",
            "comment",
        }
        assert len(await notifications(client, fan)) == 1

        await client.delete(f"/articles/{article['slug']}", headers=author.headers)
        assert [item["kind"] for item in await notifications(client, author)] == ["follow"]
        assert await notifications(client, fan) == []

    async def test_deleting_an_account_deletes_what_it_did_and_received(
        self, client: httpx.AsyncClient, jobs: JobRunner, session: AsyncSession
    ) -> None:
        author, fan, other = await register(client), await register(client), await register(client)
        await follow(client, fan, author)
        await follow(client, other, author)
        await follow(client, author, fan)
        await jobs.run_all()
        assert (await listing(client, author))["notificationsCount"] == 2

        [fan_id] = await user_ids(session, [fan])
        await session.execute(text("DELETE FROM user_account WHERE id = :id"), {"id": fan_id})
        [item] = await notifications(client, author)
        assert item["actor"]["username"] == other.username
        assert (await listing(client, author))["unreadCount"] == 1
        about_fan = await session.scalar(
            select(func.count()).where(
                or_(Notification.recipient_id == fan_id, Notification.actor_id == fan_id)
            )
        )
        assert about_fan == 0


class TestTransactions:
    async def test_a_rolled_back_request_leaves_no_notification(
        self, app: FastAPI, client: httpx.AsyncClient, jobs: JobRunner
    ) -> None:
        """A follow made by a request that then fails is rolled back with its event."""
        failing = APIRouter(route_class=AutoCommitRoute)

        @failing.post("/api/test/follow-then-fail/{username}")
        async def follow_then_fail(username: str, session: SessionDep, user: CurrentUser) -> None:
            celeb = await profiles_service.get_user(session, username)
            await profiles_service.follow(session, follower=user, followee=celeb)
            raise ValidationFailed("fails after following", field="test")

        app.include_router(failing)
        celeb, fan = await register(client), await register(client)
        response = await client.post(
            f"/test/follow-then-fail/{celeb.username}", headers=fan.headers
        )
        assert response.status_code == 422
        assert "notifications.user_followed" not in await jobs.queued()
        await jobs.run_all()
        assert await notifications(client, celeb) == []

    async def test_the_live_message_goes_out_only_after_the_handler_commits(
        self,
        app: FastAPI,
        client: httpx.AsyncClient,
        jobs: JobRunner,
        session: AsyncSession,
    ) -> None:
        celeb, fan = await register(client), await register(client)
        await follow(client, fan, celeb)
        [followed] = [
            Event.from_json(json.loads(payload))
            for payload in (
                await session.execute(
                    text("SELECT payload FROM pgqueuer WHERE entrypoint = :name"),
                    {"name": "notifications.user_followed"},
                )
            ).scalars()
        ]
        live: LiveChannel = app.state.live
        context = JobContext(
            resources=jobs.resources, session=session, job_id=1, attempt=1, last_attempt=False
        )
        celeb_id = int(followed.data["followee_id"])

        async with live.subscribe(topic(celeb_id)) as subscription:
            # Written, then rolled back as a failing job would be: nothing goes out.
            savepoint = await session.begin_nested()
            await handlers.user_followed(context, followed)
            discard_after_commit(session)
            await savepoint.rollback()
            assert subscription.ended is False
            assert await _pending(subscription) == []
            assert await notifications(client, celeb) == []

            # Written and committed: one message, the notification as the list shows it.
            await handlers.user_followed(context, followed)
            assert await _pending(subscription) == []
            await commit(session)
            [message] = await _pending(subscription)
        [item] = await notifications(client, celeb)
        assert json.loads(message) == {
            "event": "notification",
            "id": item["id"],
            "data": {"notification": item},
        }

    async def test_an_article_event_is_announced_to_every_follower(
        self, app: FastAPI, client: httpx.AsyncClient, jobs: JobRunner, session: AsyncSession
    ) -> None:
        author = await register(client)
        fans = [await register(client) for _ in range(3)]
        for fan in fans:
            await follow(client, fan, author)
        await jobs.run_all()
        ids = await user_ids(session, fans)
        live: LiveChannel = app.state.live
        received: dict[str, list[dict[str, Any]]] = {}
        async with (
            live.subscribe(topic(ids[0])) as first,
            live.subscribe(topic(ids[1])) as second,
        ):
            await create_article(client, author, title="For my followers")
            await jobs.run_all()
            received[fans[0].username] = [json.loads(m) for m in await _pending(first)]
            received[fans[1].username] = [json.loads(m) for m in await _pending(second)]
        for fan in fans[:2]:
            [message] = received[fan.username]
            [item] = await notifications(client, fan)
            assert message == {
                "event": "notification",
                "id": item["id"],
                "data": {"notification": item},
            }


async def _pending(subscription: Subscription) -> list[str]:
    """The messages already delivered to `subscription`, without waiting for more."""
    messages = []
    while True:
        try:
            async with asyncio.timeout(0.01):
                messages.append(await subscription.next())
        except TimeoutError:
            return messages


async def user_ids(session: AsyncSession, accounts: list[Account]) -> list[int]:
    names = [account.username for account in accounts]
    rows = await session.execute(select(User.username, User.id).where(User.username.in_(names)))
    by_name: dict[str, int] = dict(rows.all())
    return [by_name[name] for name in names]

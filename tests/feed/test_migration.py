"""Upgrading a database that has follows and articles fills the feed with them."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from conduit.platform.db import migrations
from conduit.platform.settings import to_async_database_url
from tests.conftest import database_name, drop_database, recreate_database

pytestmark = pytest.mark.anyio

FEED_REVISION = "7c4f0a6e3b30"
BEFORE_FEED = "5b2e8d4f1a20"


@pytest.fixture
async def database_before_the_feed(server_url: str) -> AsyncIterator[str]:
    name = database_name("conduit_feed_migration")
    url = await recreate_database(server_url, name)
    await migrations.upgrade(url, BEFORE_FEED)
    yield url
    await drop_database(server_url, name)


async def test_existing_follows_become_feed_rows(database_before_the_feed: str) -> None:
    connection = await asyncpg.connect(
        to_async_database_url(database_before_the_feed).replace("+asyncpg", "")
    )
    try:
        await connection.execute(
            "INSERT INTO user_account (username, email, password_hash) VALUES "
            "('author', 'author@example.com', 'x'), ('reader', 'reader@example.com', 'x'), "
            "('stranger', 'stranger@example.com', 'x')"
        )
        users = dict(await connection.fetch("SELECT username, id FROM user_account"))
        await connection.execute(
            "INSERT INTO follow (follower_id, followee_id) VALUES ($1, $2)",
            users["reader"],
            users["author"],
        )
        await connection.execute(
            "INSERT INTO article (slug, title, description, body, author_id) VALUES "
            "('one', 't', 'd', 'b', $1), ('two', 't', 'd', 'b', $1), ('other', 't', 'd', 'b', $2)",
            users["author"],
            users["stranger"],
        )

        await migrations.upgrade(database_before_the_feed, FEED_REVISION)
        rows = await connection.fetch(
            "SELECT entry.follower_id, article.slug, "
            "entry.article_created_at = article.created_at AND entry.author_id = article.author_id "
            "AS copies_match FROM feed_entry AS entry JOIN article ON article.id = entry.article_id"
        )
        assert {(row["follower_id"], row["slug"]) for row in rows} == {
            (users["reader"], "one"),
            (users["reader"], "two"),
        }
        assert all(row["copies_match"] for row in rows)

        await migrations.downgrade(database_before_the_feed, BEFORE_FEED)
        assert await connection.fetchval("SELECT to_regclass('feed_entry')") is None
    finally:
        await connection.close()

"""The kept counts behind `articlesCount` and `/tags`: they agree with the rows whichever way
rows come and go."""

from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.db import migrations
from conduit.platform.settings import to_async_database_url
from tests.conftest import database_name, drop_database, recreate_database
from tests.helpers import create_article, delete_article, get_tags, list_articles, register

pytestmark = pytest.mark.anyio

COUNTS_REVISION = "b3f6a2d8c915"
TAG_ORDER_REVISION = "c41e7b9d0a26"
BEFORE_COUNTS = "9e1d5c7a2f44"


async def kept_counts(session: AsyncSession) -> tuple[int, dict[str, int]]:
    total = await session.scalar(text("SELECT coalesce(sum(articles), 0) FROM article_tally"))
    tags = await session.execute(text("SELECT name, articles_count FROM tag"))
    return int(total or 0), {name: count for name, count in tags if count}


async def counted_rows(session: AsyncSession) -> tuple[int, dict[str, int]]:
    total = await session.scalar(text("SELECT count(*) FROM article"))
    tags = await session.execute(
        text(
            "SELECT tag.name, count(*) FROM article_tag JOIN tag ON tag.id = article_tag.tag_id "
            "GROUP BY tag.name"
        )
    )
    return int(total or 0), dict(tags.all())


async def test_counts_follow_publications_edits_and_deletions(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    jake, jane = await register(client), await register(client)
    first = await create_article(client, jake, tagList=["dragons", "training"])
    await create_article(client, jake, tagList=["dragons"])
    await create_article(client, jane, tagList=["training", "zoo"])
    assert await kept_counts(session) == (3, {"dragons": 2, "training": 2, "zoo": 1})

    response = await client.put(
        f"/articles/{first['slug']}",
        json={"article": {"tagList": ["zoo", "new"]}},
        headers=jake.headers,
    )
    assert response.status_code == 200
    assert await kept_counts(session) == (3, {"dragons": 1, "training": 1, "zoo": 2, "new": 1})

    await delete_article(client, jake, first["slug"])
    assert await kept_counts(session) == (2, {"dragons": 1, "training": 1, "zoo": 1})
    assert await kept_counts(session) == await counted_rows(session)


async def test_counts_follow_a_deleted_account(
    client: httpx.AsyncClient, session: AsyncSession
) -> None:
    leaving, staying = await register(client), await register(client)
    for _ in range(3):
        await create_article(client, leaving, tagList=["shared", "theirs"])
    await create_article(client, staying, tagList=["shared"])

    # Not an API operation: an operator's delete, cascading to articles and their tags.
    await session.execute(
        text("DELETE FROM user_account WHERE username = :name"), {"name": leaving.username}
    )

    assert await kept_counts(session) == (1, {"shared": 1})
    assert await kept_counts(session) == await counted_rows(session)


async def test_lists_and_tags_report_the_kept_counts(client: httpx.AsyncClient) -> None:
    author = await register(client)
    for tags in (["common", "rare"], ["common"], ["common"], []):
        await create_article(client, author, tagList=tags)

    assert (await list_articles(client, limit=1))["articlesCount"] == 4
    assert (await list_articles(client, tag="common", limit=1))["articlesCount"] == 3
    assert (await list_articles(client, tag="rare"))["articlesCount"] == 1
    assert (await list_articles(client, tag="missing"))["articlesCount"] == 0
    assert await get_tags(client) == ["common", "rare"]


async def test_tags_no_longer_used_leave_the_tag_list(client: httpx.AsyncClient) -> None:
    author = await register(client)
    article = await create_article(client, author, tagList=["fleeting", "lasting"])
    await create_article(client, author, tagList=["lasting"])
    await delete_article(client, author, article["slug"])

    assert await get_tags(client) == ["lasting"]


@pytest.fixture
async def database_before_the_counts(server_url: str) -> AsyncIterator[str]:
    name = database_name("conduit_counts_migration")
    url = await recreate_database(server_url, name)
    await migrations.upgrade(url, BEFORE_COUNTS)
    yield url
    await drop_database(server_url, name)


async def test_upgrading_counts_and_orders_the_existing_rows(
    database_before_the_counts: str,
) -> None:
    connection = await asyncpg.connect(
        to_async_database_url(database_before_the_counts).replace("+asyncpg", "")
    )
    try:
        author = await connection.fetchval(
            "INSERT INTO user_account (username, email, password_hash) "
            "VALUES ('author', 'author@example.com', 'x') RETURNING id"
        )
        articles = [
            await connection.fetchval(
                "INSERT INTO article (slug, title, description, body, author_id) "
                "VALUES ($1, 't', 'd', 'b', $2) RETURNING id",
                f"article-{index}",
                author,
            )
            for index in range(20)
        ]
        tags = dict(
            await connection.fetch(
                "INSERT INTO tag (name) VALUES ('every'), ('third') RETURNING name, id"
            )
        )
        await connection.executemany(
            "INSERT INTO article_tag (article_id, tag_id) VALUES ($1, $2)",
            [(article, tags["every"]) for article in articles]
            + [(article, tags["third"]) for article in articles[::3]],
        )

        await migrations.upgrade(database_before_the_counts, COUNTS_REVISION)

        assert await connection.fetchval("SELECT sum(articles) FROM article_tally") == 20
        assert dict(await connection.fetch("SELECT name, articles_count FROM tag")) == {
            "every": 20,
            "third": 7,
        }
        await connection.execute("DELETE FROM article WHERE id = $1", articles[0])
        assert await connection.fetchval("SELECT sum(articles) FROM article_tally") == 19
        assert await connection.fetchval("SELECT articles_count FROM tag WHERE name = 'third'") == 6

        await migrations.upgrade(database_before_the_counts, TAG_ORDER_REVISION)
        assert await connection.fetchval(
            "SELECT bool_and(link.article_created_at = article.created_at) AND count(*) = 25 "
            "FROM article_tag AS link JOIN article ON article.id = link.article_id"
        )

        await migrations.downgrade(database_before_the_counts, BEFORE_COUNTS)
        assert await connection.fetchval("SELECT to_regclass('article_tally')") is None
        await connection.execute("DELETE FROM article WHERE id = $1", articles[1])
    finally:
        await connection.close()

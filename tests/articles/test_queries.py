"""Reads cost a fixed number of SQL statements, however many rows they return."""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.helpers import Account, create_article, register
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio

SMALL = 2
LARGE = 20
SAVEPOINTS = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


@contextmanager
def recorded_statements(engine: AsyncEngine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(
        connection: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        statements.append(statement)

    event.listen(engine.sync_engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", record)


@dataclass
class World:
    caller: Account
    followed: list[Account]
    strangers: list[Account]
    article_slugs: list[str] = field(default_factory=list)

    @property
    def authors(self) -> list[Account]:
        return [*self.followed, *self.strangers]

    @property
    def everyone(self) -> list[Account]:
        return [self.caller, *self.authors]


async def build_world(client: httpx.AsyncClient) -> World:
    world = World(
        caller=await register(client),
        followed=[await register(client) for _ in range(3)],
        strangers=[await register(client) for _ in range(2)],
    )
    for author in world.followed:
        response = await client.post(
            f"/profiles/{author.username}/follow", headers=world.caller.headers
        )
        assert response.status_code == 200, response.text
    return world


async def favorite(client: httpx.AsyncClient, fan: Account, slug: str) -> None:
    response = await client.post(f"/articles/{slug}/favorite", headers=fan.headers)
    assert response.status_code == 200, response.text


async def add_articles_until(client: httpx.AsyncClient, world: World, total: int) -> None:
    """Articles by rotating authors, each with several tags, some favorited by the caller."""
    for index in range(len(world.article_slugs), total):
        author = world.authors[index % len(world.authors)]
        tags = ["common", f"mod3-{index % 3}", f"mod4-{index % 4}"]
        article = await create_article(client, author, tagList=tags)
        world.article_slugs.append(article["slug"])
        if index % 2 == 0:
            await favorite(client, world.caller, article["slug"])
        if index % 3 == 0:
            await favorite(client, world.strangers[0], article["slug"])


async def add_comments_until(
    client: httpx.AsyncClient, world: World, slug: str, total: int
) -> None:
    listed = await client.get(f"/articles/{slug}/comments")
    for index in range(len(listed.json()["comments"]), total):
        commenter = world.everyone[index % len(world.everyone)]
        response = await client.post(
            f"/articles/{slug}/comments",
            json={"comment": {"body": f"Comment {index}"}},
            headers=commenter.headers,
        )
        assert response.status_code == 200, response.text


async def statements_for(
    client: httpx.AsyncClient, engine: AsyncEngine, path: str, headers: dict[str, str]
) -> tuple[list[str], dict[str, Any]]:
    with recorded_statements(engine) as statements:
        response = await client.get(path, headers=headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return statements, body


def queries(statements: list[str]) -> list[str]:
    return [statement for statement in statements if not statement.startswith(SAVEPOINTS)]


def assert_same_cost(small: list[str], large: list[str]) -> None:
    listing = "\n---\n".join(large)
    assert len(large) == len(small), f"{len(small)} vs {len(large)} statements:\n{listing}"


@pytest.mark.parametrize("authenticated", [True, False], ids=["authenticated", "anonymous"])
async def test_article_list_statements_do_not_grow_with_rows(
    client: httpx.AsyncClient, engine: AsyncEngine, authenticated: bool
) -> None:
    world = await build_world(client)
    headers = world.caller.headers if authenticated else {}

    await add_articles_until(client, world, SMALL)
    small, small_page = await statements_for(client, engine, "/articles", headers)
    assert small_page["articlesCount"] == SMALL

    await add_articles_until(client, world, LARGE)
    large, large_page = await statements_for(client, engine, "/articles", headers)
    assert large_page["articlesCount"] == LARGE
    assert len(large_page["articles"]) == LARGE
    assert len({item["author"]["username"] for item in large_page["articles"]}) == 5
    assert any(item["favorited"] for item in large_page["articles"]) is authenticated
    assert any(item["author"]["following"] for item in large_page["articles"]) is authenticated
    assert all(len(item["tagList"]) == 3 for item in large_page["articles"])

    assert_same_cost(small, large)


async def test_filtered_article_list_statements_do_not_grow_with_rows(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    world = await build_world(client)
    path = f"/articles?tag=common&favorited={world.caller.username}"

    await add_articles_until(client, world, SMALL)
    small, small_page = await statements_for(client, engine, path, world.caller.headers)
    assert small_page["articlesCount"] == 1

    await add_articles_until(client, world, LARGE)
    large, large_page = await statements_for(client, engine, path, world.caller.headers)
    assert large_page["articlesCount"] == LARGE // 2

    assert_same_cost(small, large)


async def test_feed_statements_do_not_grow_with_rows(
    client: httpx.AsyncClient, engine: AsyncEngine, jobs: JobRunner
) -> None:
    world = await build_world(client)

    await add_articles_until(client, world, SMALL)
    await jobs.run_all()
    small, small_feed = await statements_for(client, engine, "/articles/feed", world.caller.headers)
    assert small_feed["articlesCount"] == SMALL

    await add_articles_until(client, world, LARGE)
    await jobs.run_all()
    large, large_feed = await statements_for(client, engine, "/articles/feed", world.caller.headers)
    followed_names = {account.username for account in world.followed}
    assert large_feed["articlesCount"] == 12
    assert {item["author"]["username"] for item in large_feed["articles"]} == followed_names
    assert all(item["author"]["following"] for item in large_feed["articles"])
    assert any(item["favorited"] for item in large_feed["articles"])

    assert_same_cost(small, large)


@pytest.mark.parametrize("authenticated", [True, False], ids=["authenticated", "anonymous"])
async def test_search_statements_do_not_grow_with_rows(
    client: httpx.AsyncClient, engine: AsyncEngine, authenticated: bool
) -> None:
    world = await build_world(client)
    headers = world.caller.headers if authenticated else {}
    path = "/articles?q=article&tag=common"
    # A process parses a search text once (one statement), then knows its words.
    await client.get(path, headers=headers)

    await add_articles_until(client, world, SMALL)
    small, small_page = await statements_for(client, engine, path, headers)
    assert small_page["articlesCount"] == SMALL

    await add_articles_until(client, world, LARGE)
    large, large_page = await statements_for(client, engine, path, headers)
    assert large_page["articlesCount"] == LARGE
    assert any(item["favorited"] for item in large_page["articles"]) is authenticated

    assert_same_cost(small, large)


@pytest.mark.parametrize("path", ["/articles", "/articles?q=article", "/articles/feed"])
async def test_a_page_by_cursor_costs_what_the_first_page_costs(
    client: httpx.AsyncClient, engine: AsyncEngine, jobs: JobRunner, path: str
) -> None:
    world = await build_world(client)
    await add_articles_until(client, world, LARGE)
    await jobs.run_all()
    separator = "&" if "?" in path else "?"

    first, page = await statements_for(
        client, engine, f"{path}{separator}limit=3", world.caller.headers
    )
    costs = []
    for _ in range(3):
        cursor = page["nextCursor"]
        assert cursor is not None
        statements, page = await statements_for(
            client, engine, f"{path}{separator}limit=3&cursor={cursor}", world.caller.headers
        )
        assert len(page["articles"]) == 3
        costs.append(statements)

    # Savepoints come and go with the test's transaction; the queries are what a page costs.
    for statements in costs:
        assert_same_cost(queries(first), queries(statements))


@pytest.mark.parametrize("authenticated", [True, False], ids=["authenticated", "anonymous"])
async def test_comment_list_statements_do_not_grow_with_rows(
    client: httpx.AsyncClient, engine: AsyncEngine, authenticated: bool
) -> None:
    world = await build_world(client)
    headers = world.caller.headers if authenticated else {}
    slug = (await create_article(client, world.followed[0]))["slug"]
    path = f"/articles/{slug}/comments"

    await add_comments_until(client, world, slug, SMALL)
    small, small_list = await statements_for(client, engine, path, headers)
    assert len(small_list["comments"]) == SMALL

    await add_comments_until(client, world, slug, LARGE)
    large, large_list = await statements_for(client, engine, path, headers)
    comments = large_list["comments"]
    assert len(comments) == LARGE
    assert len({comment["author"]["username"] for comment in comments}) == 6
    assert any(comment["author"]["following"] for comment in comments) is authenticated

    assert_same_cost(small, large)


async def test_statement_recording_stops_after_the_block(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    with recorded_statements(engine) as statements:
        await client.get("/tags")
    recorded = len(statements)
    await client.get("/tags")
    assert recorded > 0
    assert len(statements) == recorded


async def test_adding_a_comment_reads_nothing_back_that_its_insert_returned(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    world = await build_world(client)
    await add_articles_until(client, world, 1)
    with recorded_statements(engine) as statements:
        response = await client.post(
            f"/articles/{world.article_slugs[0]}/comments",
            json={"comment": {"body": "First"}},
            headers=world.caller.headers,
        )
    assert response.status_code == 200, response.text
    assert response.json()["comment"]["createdAt"]
    on_comments = [sql for sql in statements if "comment." in sql or "INTO comment " in sql]
    assert len(on_comments) == 1, on_comments
    assert on_comments[0].startswith("INSERT INTO comment ")


@pytest.mark.parametrize(
    ("method", "path", "payload"),
    [
        ("POST", "/articles/{slug}/comments", {"comment": {"body": "First"}}),
        ("POST", "/articles/{slug}/favorite", None),
        ("DELETE", "/articles/{slug}/favorite", None),
    ],
)
async def test_a_write_on_an_article_loads_its_caller_once(
    client: httpx.AsyncClient, engine: AsyncEngine, method: str, path: str, payload: Any
) -> None:
    # The route needs a login and its article dependency asks who is viewing: both are one
    # caller, read from the token and the database once.
    world = await build_world(client)
    await add_articles_until(client, world, 1)
    with recorded_statements(engine) as statements:
        response = await client.request(
            method,
            path.format(slug=world.article_slugs[0]),
            json=payload,
            headers=world.caller.headers,
        )
    assert response.status_code == 200, response.text
    callers_loaded = [sql for sql in statements if "WHERE user_account.id = " in sql]
    assert len(callers_loaded) == 1, callers_loaded


async def test_an_author_writing_an_article_is_not_asked_whether_they_follow_themselves(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author = await register(client)
    with recorded_statements(engine) as statements:
        article = await create_article(client, author)
        response = await client.put(
            f"/articles/{article['slug']}",
            json={"article": {"body": "Edited"}},
            headers=author.headers,
        )
    assert response.status_code == 200, response.text
    assert response.json()["article"]["author"]["following"] is False
    assert not [sql for sql in statements if "FROM follow" in sql]


async def test_a_favorite_takes_the_new_count_from_its_own_update(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author, fan, other = await register(client), await register(client), await register(client)
    slug = (await create_article(client, author))["slug"]
    for who, method, count in ((fan, "POST", 1), (other, "POST", 2), (fan, "DELETE", 1)):
        with recorded_statements(engine) as statements:
            response = await client.request(
                method, f"/articles/{slug}/favorite", headers=who.headers
            )
        assert response.status_code == 200, response.text
        assert response.json()["article"]["favoritesCount"] == count
        assert not [sql for sql in statements if sql.startswith("SELECT article.favorites_count")]
    # Favoriting again changes nothing, and shows the count as it is now.
    again = await client.post(f"/articles/{slug}/favorite", headers=other.headers)
    assert again.json()["article"]["favoritesCount"] == 1
    gone = await client.delete(f"/articles/{slug}/favorite", headers=fan.headers)
    assert gone.json()["article"]["favoritesCount"] == 1


@pytest.mark.parametrize("method", ["POST", "DELETE"])
async def test_a_favorite_reads_its_article_and_flags_once_and_counts_as_it_writes(
    client: httpx.AsyncClient, engine: AsyncEngine, method: str
) -> None:
    # The article comes with its tags and whether the caller follows its author in the
    # statement that finds it; the favorite and the count it moves are one statement.
    author, fan = await register(client), await register(client)
    await client.post(f"/profiles/{author.username}/follow", headers=fan.headers)
    slug = (await create_article(client, author, tagList=["one", "two"]))["slug"]
    if method == "DELETE":
        await favorite(client, fan, slug)
    with recorded_statements(engine) as statements:
        response = await client.request(method, f"/articles/{slug}/favorite", headers=fan.headers)
    assert response.status_code == 200, response.text
    article = response.json()["article"]
    assert (article["tagList"], article["author"]["following"]) == (["one", "two"], True)
    recorded = queries(statements)
    assert [sql for sql in recorded if "FROM article" in sql] == [recorded[1]], recorded
    assert "JOIN tag" in recorded[1]
    assert "JOIN follow" in recorded[1]
    assert not [sql for sql in recorded if "FROM article_tag" in sql or "FROM follow" in sql]
    changes = [sql for sql in recorded if sql.startswith(("INSERT", "DELETE", "UPDATE", "WITH"))]
    changes = [sql for sql in changes if "domain_event" not in sql]
    assert len(changes) == 1, changes
    assert "favorite" in changes[0]
    assert "UPDATE article SET favorites_count" in changes[0]


async def test_a_publication_finds_a_taken_slug_by_its_insert_and_reads_nothing_back(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    # The insert returns the id and timestamps and, on a taken slug, nothing (no check before
    # it, no savepoint to roll back); the tags are created and linked one statement each.
    author = await register(client)
    first = await create_article(client, author, title="Same title", tagList=["b", "a"])
    with recorded_statements(engine) as statements:
        second = await create_article(client, author, title="Same title", tagList=["c", "a"])
    assert first["slug"] == "same-title"
    assert second["slug"].startswith("same-title-")
    assert second["tagList"] == ["a", "c"]
    assert second["createdAt"]
    recorded = queries(statements)
    # One savepoint: the request's own (the tests run each request's transaction in one).
    assert len([sql for sql in statements if sql.startswith("SAVEPOINT")]) == 1, statements
    on_articles = [
        sql for sql in recorded if sql.startswith("INSERT INTO article") or "FROM article" in sql
    ]
    assert [sql.split(" (")[0] for sql in on_articles] == [
        "INSERT INTO article",
        "INSERT INTO article",
        "INSERT INTO article_tag",
    ], recorded
    assert all("ON CONFLICT (slug) DO NOTHING RETURNING" in sql for sql in on_articles[:2])
    assert len([sql for sql in recorded if sql.startswith("INSERT INTO tag ")]) == 1
    tagged = await client.get("/articles", params={"tag": "c"})
    assert [article["slug"] for article in tagged.json()["articles"]] == [second["slug"]]


async def test_a_write_records_its_event_and_asks_whether_webhooks_listen_in_one_statement(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author))["slug"]
    with recorded_statements(engine) as statements:
        response = await client.post(
            f"/articles/{slug}/comments", json={"comment": {"body": "Hi"}}, headers=reader.headers
        )
    assert response.status_code == 200, response.text
    on_events = [sql for sql in statements if "domain_event" in sql or "webhook_endpoint" in sql]
    assert len(on_events) == 1, on_events
    assert on_events[0].startswith("WITH recorded AS \n(INSERT INTO domain_event ")
    assert "FROM webhook_endpoint" in on_events[0]


async def test_comments_read_nothing_of_their_article_but_its_key(
    client: httpx.AsyncClient, engine: AsyncEngine
) -> None:
    author, reader = await register(client), await register(client)
    slug = (await create_article(client, author, tagList=["one", "two"]))["slug"]
    with recorded_statements(engine) as statements:
        added = await client.post(
            f"/articles/{slug}/comments", json={"comment": {"body": "Hi"}}, headers=reader.headers
        )
        listed = await client.get(f"/articles/{slug}/comments", headers=reader.headers)
        removed = await client.delete(
            f"/articles/{slug}/comments/{added.json()['comment']['id']}", headers=reader.headers
        )
    assert (added.status_code, listed.status_code, removed.status_code) == (200, 200, 204)
    assert [comment["body"] for comment in listed.json()["comments"]] == ["Hi"]
    on_article = [sql for sql in statements if "FROM article" in sql]
    assert on_article, statements
    # The article's key only: no author joined, no tags, no text.
    assert all("JOIN" not in sql and "article.body" not in sql for sql in on_article), on_article
    missing = await client.get(f"/articles/{slug}-gone/comments")
    assert missing.status_code == 404
    assert missing.json() == {"errors": {"article": ["not found"]}}


async def test_a_readers_page_costs_its_caller_its_keys_and_its_flags_one_statement_each(
    client: httpx.AsyncClient, engine: AsyncEngine, jobs: JobRunner
) -> None:
    # The feed's keys come with their total, and which of the page the caller has favorited
    # and whose authors they follow, in one statement each; everything else is cached.
    world = await build_world(client)
    await add_articles_until(client, world, SMALL)
    await jobs.run_all()
    headers = world.caller.headers
    paths = ["/articles/feed", "/articles", f"/articles/{world.article_slugs[0]}"]
    for path in paths:
        await statements_for(client, engine, path, headers)  # fills the cache
    costs = {
        path: queries((await statements_for(client, engine, path, headers))[0]) for path in paths
    }
    feed, listing, article = costs.values()
    assert len(feed) == 3, feed
    assert "count(*)" in feed[1]
    assert "feed_entry" in feed[1]
    for statements in costs.values():
        assert "WHERE user_account.id = " in statements[0]
        assert "FROM favorite" in statements[-1]
        assert "FROM follow" in statements[-1]
    assert len(listing) == len(article) == 2, (listing, article)

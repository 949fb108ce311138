"""`conduit seed` on databases of its own: what it writes must be what the app would have.

The seeded databases are module-scoped, so they are built before the per-test cheap password
hashing applies: the seeded hash has the production cost. The tests on the first one run in
file order: they only read it (signing in aside) until the one that writes through the app.
"""

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from click.testing import Result
from pwdlib import PasswordHash
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, create_async_engine
from typer.testing import CliRunner

from conduit.app import create_app
from conduit.articles import slugs
from conduit.cli import SEED_PASSWORD, app
from conduit.platform.seed import generate
from conduit.platform.settings import Environment, Settings, get_settings, to_async_database_url
from tests.conftest import (
    GENEROUS_RATE_LIMITS,
    TEST_JWT_SECRET,
    database_name,
    drop_database,
    recreate_database,
)
from tests.feed.support import expected_feed, feed_rows, whole_feed
from tests.helpers import Account, create_article, register

pytestmark = pytest.mark.anyio

runner = CliRunner()
USERS = 60
ARTICLES = 150
# Low enough that the most followed authors are fanned out on read.
THRESHOLD = 8
SEED_ARGS = (
    "--users",
    str(USERS),
    "--articles",
    str(ARTICLES),
    "--follows-per-user",
    "6",
    "--favorites-per-article",
    "4",
    "--comments-per-article",
    "2",
    "--tags",
    "40",
    "--seed",
    "7",
    "--until",
    "2026-11-01T00:00:00",
)
# Every seeded table's rows in a fixed order, without the password hash (salted per run).
FINGERPRINT = """
SELECT md5(string_agg(row, E'\n' ORDER BY row)) FROM (
  SELECT concat_ws('|', 'u', id, username, email, bio, image, created_at, updated_at) AS row
    FROM user_account
  UNION ALL SELECT concat_ws('|', 't', id, name) FROM tag
  UNION ALL SELECT concat_ws('|', 'a', id, slug, title, description, md5(body), author_id,
    favorites_count, created_at, updated_at) FROM article
  UNION ALL SELECT concat_ws('|', 'at', article_id, tag_id) FROM article_tag
  UNION ALL SELECT concat_ws('|', 'f', follower_id, followee_id, created_at) FROM follow
  UNION ALL SELECT concat_ws('|', 'fv', user_id, article_id, created_at) FROM favorite
  UNION ALL SELECT concat_ws('|', 'c', id, md5(body), article_id, author_id, created_at)
    FROM comment
  UNION ALL SELECT concat_ws('|', 'fa', author_id, mode, settled, mode_changed_at)
    FROM feed_author
  UNION ALL SELECT concat_ws('|', 'fe', follower_id, article_id, article_created_at, author_id)
    FROM feed_entry
) AS rows
"""


def seed(url: str, *args: str, input: str | None = None) -> Result:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DATABASE_URL", url)
        patch.setenv("FEED_FANOUT_MAX_FOLLOWERS", str(THRESHOLD))
        get_settings.cache_clear()
        try:
            return runner.invoke(app, ["seed", *args], input=input)
        finally:
            get_settings.cache_clear()


@pytest.fixture(scope="module")
def seeded_url(server_url: str) -> Iterator[str]:
    name = database_name("conduit_seed")
    url = asyncio.run(recreate_database(server_url, name))
    result = seed(url, *SEED_ARGS)
    assert result.exit_code == 0, result.output
    yield url
    asyncio.run(drop_database(server_url, name))


@pytest.fixture(scope="module")
def second_url(server_url: str) -> Iterator[str]:
    name = database_name("conduit_seed_again")
    url = asyncio.run(recreate_database(server_url, name))
    yield url
    asyncio.run(drop_database(server_url, name))


@pytest.fixture
async def engine(seeded_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(to_async_database_url(seeded_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def db(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine) as session:
        yield session


@pytest.fixture
async def client(seeded_url: str, tmp_path: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app on the seeded database, committing as in production."""
    settings = Settings(
        _env_file=None,
        environment=Environment.test,
        database_url=seeded_url,
        data_dir=tmp_path,
        jwt_secret=TEST_JWT_SECRET,
        migrate_on_start=False,
        worker_in_process=False,
        feed_fanout_max_followers=THRESHOLD,
        **GENEROUS_RATE_LIMITS,
    )
    application = create_app(settings)
    async with LifespanManager(application) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            yield client


async def fetch(db: AsyncSession, query: str, **params: Any) -> list[Any]:
    return list((await db.execute(text(query), params)).all())


async def scalar(db: AsyncSession, query: str, **params: Any) -> Any:
    return await db.scalar(text(query), params)


async def login(client: httpx.AsyncClient, username: str, email: str) -> Account:
    response = await client.post(
        "/users/login", json={"user": {"email": email, "password": SEED_PASSWORD}}
    )
    assert response.status_code == 200, response.text
    return Account(username, email, SEED_PASSWORD, response.json()["user"]["token"])


async def test_it_builds_the_numbers_asked_for(db: AsyncSession) -> None:
    assert await scalar(db, "SELECT count(*) FROM user_account") == USERS
    assert await scalar(db, "SELECT count(*) FROM article") == ARTICLES
    assert await scalar(db, "SELECT count(*) FROM follow") > USERS
    assert await scalar(db, "SELECT count(*) FROM favorite") > ARTICLES
    assert await scalar(db, "SELECT count(*) FROM comment") > ARTICLES
    tags_per_article = await fetch(
        db, "SELECT count(*) FROM article_tag GROUP BY article_id ORDER BY 1"
    )
    assert len(tags_per_article) == ARTICLES
    assert tags_per_article[0][0] >= 1
    assert tags_per_article[-1][0] <= 5
    # Nothing queued and no events: seeding is not a history of requests.
    assert await scalar(db, "SELECT count(*) FROM pgqueuer") == 0
    assert await scalar(db, "SELECT count(*) FROM domain_event") == 0


async def test_every_user_signs_in_with_the_password(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    stored = await scalar(db, "SELECT min(password_hash) FROM user_account")
    assert await scalar(db, "SELECT count(DISTINCT password_hash) FROM user_account") == 1
    production = PasswordHash.recommended().hash("anything")
    # $argon2id$v=19$m=...,t=...,p=...$salt$hash: the same algorithm and cost.
    assert stored.split("$")[1:4] == production.split("$")[1:4]
    users = await fetch(db, "SELECT username, email FROM user_account ORDER BY id DESC LIMIT 3")
    for username, email in users:
        account = await login(client, username, email.upper())
        response = await client.get("/user", headers=account.headers)
        assert response.json()["user"]["username"] == username


async def test_lists_and_counters_agree_with_the_rows(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    listing = (await client.get("/articles", params={"limit": 100})).json()
    assert listing["articlesCount"] == ARTICLES
    created = [article["createdAt"] for article in listing["articles"]]
    assert created == sorted(created, reverse=True)
    wrong = await scalar(
        db,
        "SELECT count(*) FROM article LEFT JOIN ("
        "  SELECT article_id, count(*) AS favorites FROM favorite GROUP BY article_id"
        ") AS counted ON counted.article_id = article.id "
        "WHERE article.favorites_count <> coalesce(counted.favorites, 0)",
    )
    assert wrong == 0
    for article in listing["articles"][:10]:
        assert article["favoritesCount"] == await scalar(
            db,
            "SELECT count(*) FROM favorite JOIN article ON article.id = favorite.article_id "
            "WHERE article.slug = :slug",
            slug=article["slug"],
        )
    [top] = await fetch(db, "SELECT slug, favorites_count FROM article ORDER BY 2 DESC LIMIT 1")
    single = (await client.get(f"/articles/{top[0]}")).json()["article"]
    assert single["favoritesCount"] == top[1]
    assert single["body"]
    tags = (await client.get("/tags")).json()["tags"]
    assert tags
    tagged = (await client.get("/articles", params={"tag": tags[0]})).json()
    assert tagged["articlesCount"] == await scalar(
        db,
        "SELECT count(*) FROM article_tag JOIN tag ON tag.id = article_tag.tag_id "
        "WHERE tag.name = :name",
        name=tags[0],
    )


async def test_nothing_happens_before_it_could_have(db: AsyncSession) -> None:
    checks = {
        "updated before created": "SELECT count(*) FROM user_account WHERE updated_at < created_at"
        " UNION ALL SELECT count(*) FROM article WHERE updated_at < created_at",
        "article before its author": "SELECT count(*) FROM article JOIN user_account AS author "
        "ON author.id = article.author_id WHERE article.created_at < author.created_at",
        "follow before a side": "SELECT count(*) FROM follow JOIN user_account AS side "
        "ON side.id IN (follow.follower_id, follow.followee_id) "
        "WHERE follow.created_at < side.created_at",
        "favorite before a side": "SELECT count(*) FROM favorite JOIN article "
        "ON article.id = favorite.article_id JOIN user_account AS fan ON fan.id = favorite.user_id "
        "WHERE favorite.created_at < greatest(article.created_at, fan.created_at)",
        "comment before a side": "SELECT count(*) FROM comment JOIN article "
        "ON article.id = comment.article_id JOIN user_account AS author "
        "ON author.id = comment.author_id "
        "WHERE comment.created_at < greatest(article.created_at, author.created_at)",
        "id order is not time order": "SELECT count(*) FROM ("
        "  SELECT created_at < lag(created_at) OVER (ORDER BY id) AS earlier FROM article"
        ") AS ordered WHERE earlier",
        "self-follow": "SELECT count(*) FROM follow WHERE follower_id = followee_id",
        "own favorite": "SELECT count(*) FROM favorite JOIN article "
        "ON article.id = favorite.article_id WHERE favorite.user_id = article.author_id",
    }
    for what, query in checks.items():
        assert all(count == 0 for (count,) in await fetch(db, query)), what


async def test_slugs_and_names_are_the_apps(db: AsyncSession) -> None:
    rows = await fetch(db, "SELECT title, slug FROM article ORDER BY id")
    seen: set[str] = set()
    for title, slug in rows:
        base = slugs.base_slug(title)
        if base in seen:
            assert slug.startswith(f"{base}-")
            assert len(slug) == len(base) + 1 + slugs.SUFFIX_LENGTH
        else:
            assert slug == base
            seen.add(base)
    names = await fetch(db, "SELECT username, email FROM user_account")
    assert len({name.lower() for name, _ in names}) == USERS
    assert all(email.lower() == f"{name}@{email.split('@')[1]}" for name, email in names)


def test_fast_slugs_are_the_apps_slugs() -> None:
    plan = generate.Plan(
        users=1,
        articles=1,
        follows_per_user=0,
        favorites_per_article=0,
        comments_per_article=0,
        tags=0,
        seed=3,
        until=generate.to_datetime(0),
        days=1,
    )
    text_source = generate.Text(plan)
    rng = generate.random.Random(5)
    for _ in range(3000):
        title = text_source.title(rng)
        assert generate.slug_base(title) == slugs.base_slug(title), title
    assert generate.slug_base("word " * 40) == slugs.base_slug("word " * 40)


async def test_feeds_are_what_the_worker_would_have_built(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    modes = await fetch(
        db,
        "SELECT state.mode, state.settled, state.cursor_article_id, "
        "(SELECT count(*) FROM follow WHERE followee_id = state.author_id) AS followers, "
        "(SELECT count(*) FROM article WHERE author_id = state.author_id) AS articles "
        "FROM feed_author AS state",
    )
    assert {mode for mode, *_ in modes} == {"read", "write"}
    for mode, settled, cursor, followers, articles in modes:
        assert settled
        assert cursor is None
        assert followers or articles
        assert (mode == "read") == (followers > THRESHOLD)
    assert any(mode == "read" and articles for mode, _, _, _, articles in modes)
    # Every author the jobs would have touched has a state.
    assert (
        await scalar(
            db,
            "SELECT count(*) FROM user_account WHERE id NOT IN (SELECT author_id FROM feed_author) "
            "AND (id IN (SELECT followee_id FROM follow) OR id IN (SELECT author_id FROM article))",
        )
        == 0
    )

    expected_rows = await fetch(
        db,
        "SELECT reader.username, article.slug FROM follow "
        "JOIN article ON article.author_id = follow.followee_id "
        "JOIN user_account AS reader ON reader.id = follow.follower_id "
        "JOIN feed_author AS state ON state.author_id = follow.followee_id "
        "WHERE state.mode = 'write'",
    )
    assert await feed_rows(db) == {(username, slug) for username, slug in expected_rows}

    users = await fetch(db, "SELECT username, email FROM user_account ORDER BY id")
    for username, email in users:
        viewer = await login(client, username, email)
        assert await whole_feed(client, viewer, page_size=20) == await expected_feed(db, username)


def test_the_invariants_hold_in_sql(seeded_url: str) -> None:
    assert set(invariants_broken(seeded_url).values()) == {0}


async def test_the_app_carries_on_after_the_seeded_ids(
    client: httpx.AsyncClient, db: AsyncSession
) -> None:
    newcomer = await register(client, "newcomer")
    article = await create_article(client, newcomer, tagList=["brand-new-tag", "python"])
    assert await scalar(db, "SELECT max(id) FROM user_account") == USERS + 1
    assert await scalar(db, "SELECT id FROM article WHERE slug = :slug", slug=article["slug"]) == (
        ARTICLES + 1
    )
    [username] = (await fetch(db, "SELECT username FROM user_account WHERE id = 1"))[0]
    response = await client.post(
        f"/articles/{article['slug']}/comments",
        json={"comment": {"body": "Seeded and still writing."}},
        headers=newcomer.headers,
    )
    assert response.status_code == 200, response.text
    followed = await client.post(f"/profiles/{username}/follow", headers=newcomer.headers)
    assert followed.status_code == 200, followed.text


def fingerprint(url: str) -> str:
    async def read() -> str:
        engine = create_async_engine(to_async_database_url(url))
        try:
            async with engine.connect() as connection:
                return str(await connection.scalar(text(FINGERPRINT)))
        finally:
            await engine.dispose()

    return asyncio.run(read())


def invariants_broken(url: str) -> dict[str, int]:
    """The invariants checked in SQL alone, as counts of the rows that break them."""
    checks = {
        "favorites_count": "SELECT count(*) FROM article LEFT JOIN ("
        "  SELECT article_id, count(*) AS favorites FROM favorite GROUP BY article_id"
        ") AS counted ON counted.article_id = article.id "
        "WHERE article.favorites_count <> coalesce(counted.favorites, 0)",
        "feed rows": "SELECT count(*) FROM (("
        "  SELECT follow.follower_id, article.id FROM follow "
        "  JOIN article ON article.author_id = follow.followee_id "
        "  JOIN feed_author AS state ON state.author_id = follow.followee_id "
        "  WHERE state.mode = 'write'"
        ") EXCEPT ALL (SELECT follower_id, article_id FROM feed_entry)"
        " UNION ALL ("
        "  (SELECT follower_id, article_id FROM feed_entry) EXCEPT ALL ("
        "  SELECT follow.follower_id, article.id FROM follow "
        "  JOIN article ON article.author_id = follow.followee_id "
        "  JOIN feed_author AS state ON state.author_id = follow.followee_id "
        "  WHERE state.mode = 'write'))) AS different",
        "modes": "SELECT count(*) FROM feed_author AS state "
        "WHERE (state.mode = 'read') <> (("
        "  SELECT count(*) FROM follow WHERE followee_id = state.author_id"
        ") > :threshold) OR NOT state.settled",
    }

    async def read() -> dict[str, int]:
        engine = create_async_engine(to_async_database_url(url))
        try:
            async with engine.connect() as connection:
                params = {"threshold": THRESHOLD}
                return {
                    what: int(await connection.scalar(text(query), params) or 0)
                    for what, query in checks.items()
                }
        finally:
            await engine.dispose()

    return asyncio.run(read())


def test_same_seed_same_data_and_the_guards(second_url: str) -> None:
    first = seed(second_url, *SEED_ARGS)
    assert first.exit_code == 0, first.output
    seeded = fingerprint(second_url)

    refused = seed(second_url, *SEED_ARGS)
    assert refused.exit_code == 2
    assert "already has users" in refused.output
    assert seed(second_url, "--append", "--reset").exit_code == 2
    assert fingerprint(second_url) == seeded

    # The same seed again beside the first: every name it would pick is taken.
    appended = seed(second_url, "--append", "--users", "30", "--articles", "50", "--seed", "7")
    assert appended.exit_code == 0, appended.output
    assert fingerprint(second_url) != seeded
    assert set(invariants_broken(second_url).values()) == {0}

    declined = seed(second_url, *SEED_ARGS, "--reset", input="n\n")
    assert declined.exit_code == 1
    assert fingerprint(second_url) != seeded
    again = seed(second_url, *SEED_ARGS, "--reset", "--yes")
    assert again.exit_code == 0, again.output
    assert fingerprint(second_url) == seeded

    other_seed = [*SEED_ARGS[:-3], "8", *SEED_ARGS[-2:]]
    assert other_seed[-4:-2] == ["--seed", "8"]
    different = seed(second_url, *other_seed, "--reset", "--yes")
    assert different.exit_code == 0, different.output
    assert fingerprint(second_url) != seeded
    assert set(invariants_broken(second_url).values()) == {0}

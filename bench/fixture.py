"""The fixture: users, follows, articles with tags, comments and favorites, made through the
public API of any RealWorld server, and saved so the load step (and later runs) can use them."""

import asyncio
import json
import random
import re
import secrets
from collections.abc import Awaitable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import httpx

RATE_LIMIT_HINT = "rate limited: start the server with RATE_LIMIT_ENABLED=false"

# fmt: off
WORDS = (
    "river", "mountain", "garden", "window", "morning", "silver", "engine", "letter", "market",
    "harbor", "pattern", "signal", "winter", "summer", "forest", "bridge", "lantern", "compass",
    "journey", "anchor", "candle", "meadow", "orbit", "canyon", "thunder", "whisper", "crystal",
    "harvest", "shadow", "island", "voyage", "ember", "falcon", "glacier", "horizon", "marble",
    "needle", "quartz", "saddle", "timber", "valley", "walnut", "yellow", "zephyr", "beacon",
    "cobalt", "delta",
)
TAGS = (
    "python", "postgres", "async", "caching", "design", "testing", "operations", "data",
    "security", "performance", "career", "frontend",
)
# fmt: on

T = TypeVar("T")


class FixtureError(RuntimeError):
    pass


@dataclass
class User:
    username: str
    email: str
    password: str
    token: str


@dataclass
class Article:
    slug: str
    author: str
    tags: list[str]


@dataclass
class Fixture:
    base_url: str
    run: str
    created_at: str
    users: list[User]
    articles: list[Article]
    tags: list[str] = field(default_factory=lambda: list(TAGS))
    words: list[str] = field(default_factory=lambda: list(WORDS))

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> "Fixture":
        raw = json.loads(path.read_text())
        return cls(
            base_url=raw["base_url"],
            run=raw["run"],
            created_at=raw["created_at"],
            users=[User(**user) for user in raw["users"]],
            articles=[Article(**article) for article in raw["articles"]],
            tags=raw["tags"],
            words=raw["words"],
        )


@dataclass(frozen=True)
class Survey:
    """What the target holds beyond the fixture, so reads span the whole data set."""

    articles_count: int
    slugs: list[str]
    usernames: list[str]
    # `nextCursor`s of pages from all over the list, when the target pages by cursor.
    cursors: list[str] = field(default_factory=list)
    # Words of the sampled articles' titles, for searches that match the target's own text.
    words: list[str] = field(default_factory=list)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Token {token}"}


def check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code == 429:
        raise FixtureError(f"{what}: 429 Too Many Requests; {RATE_LIMIT_HINT}")
    if not response.is_success:
        raise FixtureError(f"{what}: {response.status_code} {response.text[:300]}")
    body: dict[str, Any] = response.json() if response.content else {}
    return body


def check_rate_limits_off(response: httpx.Response) -> None:
    """Conduit (and servers like it) announce active limits on every response."""
    if any(name.lower().startswith("x-ratelimit-") for name in response.headers):
        raise FixtureError(
            f"the target sends X-RateLimit-* headers, so its limits would throttle the load; "
            f"{RATE_LIMIT_HINT}"
        )


async def preflight(client: httpx.AsyncClient) -> None:
    response = await client.get("tags")
    check(response, "GET /tags")
    check_rate_limits_off(response)


async def _bounded(limit: asyncio.Semaphore, work: Awaitable[T]) -> T:
    async with limit:
        return await work


async def _all(works: Iterable[Awaitable[T]], concurrency: int) -> list[T]:
    limit = asyncio.Semaphore(concurrency)
    return list(await asyncio.gather(*(_bounded(limit, work) for work in works)))


def _words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


async def create(
    client: httpx.AsyncClient,
    *,
    users: int,
    articles: int,
    follows_per_user: int = 5,
    comments_per_article: int = 2,
    favorites_per_user: int = 5,
    concurrency: int = 8,
    seed: int = 1,
) -> Fixture:
    if users < 1 or articles < 1:
        raise FixtureError("the fixture needs at least one user and one article")
    rng = random.Random(seed)
    run = secrets.token_hex(3)

    async def register(i: int) -> User:
        username = f"bench{run}u{i}"
        email = f"{username}@bench.example"
        password = f"bench-{run}-{i}-password"
        body = {"user": {"username": username, "email": email, "password": password}}
        data = check(await client.post("users", json=body), f"register {username}")
        return User(username, email, password, data["user"]["token"])

    made_users = await _all((register(i) for i in range(users)), concurrency)

    async def follow(user: User, other: User) -> None:
        check(
            await client.post(f"profiles/{other.username}/follow", headers=auth(user.token)),
            f"{user.username} follows {other.username}",
        )

    follows = min(follows_per_user, users - 1)
    await _all(
        (
            follow(user, made_users[(i + step) % users])
            for i, user in enumerate(made_users)
            for step in range(1, follows + 1)
        ),
        concurrency,
    )

    async def publish(i: int) -> Article:
        author = made_users[i % users]
        tags = sorted(rng.sample(TAGS, rng.randint(1, 3)))
        article = {
            "title": f"{_words(rng, 4).capitalize()} {run} {i}",
            "description": _words(rng, 10),
            "body": _words(rng, 120),
            "tagList": tags,
        }
        data = check(
            await client.post("articles", json={"article": article}, headers=auth(author.token)),
            f"create article {i}",
        )
        return Article(data["article"]["slug"], author.username, tags)

    made_articles = await _all((publish(i) for i in range(articles)), concurrency)

    async def comment(user: User, article: Article) -> None:
        body = {"comment": {"body": _words(rng, 20)}}
        check(
            await client.post(
                f"articles/{article.slug}/comments", json=body, headers=auth(user.token)
            ),
            f"comment on {article.slug}",
        )

    await _all(
        (
            comment(rng.choice(made_users), article)
            for article in made_articles
            for _ in range(comments_per_article)
        ),
        concurrency,
    )

    async def favorite(user: User, article: Article) -> None:
        check(
            await client.post(f"articles/{article.slug}/favorite", headers=auth(user.token)),
            f"{user.username} favorites {article.slug}",
        )

    await _all(
        (
            favorite(user, article)
            for user in made_users
            for article in rng.sample(made_articles, min(favorites_per_user, articles))
        ),
        concurrency,
    )
    return Fixture(
        base_url=str(client.base_url),
        run=run,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        users=made_users,
        articles=made_articles,
    )


async def refresh_tokens(client: httpx.AsyncClient, fixture: Fixture, concurrency: int) -> bool:
    """Log the users in again when the saved tokens no longer work (they expire)."""
    if (await client.get("user", headers=auth(fixture.users[0].token))).is_success:
        return False

    async def login(user: User) -> None:
        body = {"user": {"email": user.email, "password": user.password}}
        user.token = check(await client.post("users/login", json=body), "login")["user"]["token"]

    await _all((login(user) for user in fixture.users), concurrency)
    return True


async def survey(client: httpx.AsyncClient, *, pages: int = 10, seed: int = 2) -> Survey:
    """The article count and a sample of slugs, authors, cursors and title words from all
    over the target's data."""
    first = check(await client.get("articles", params={"limit": 1}), "GET /articles")
    count = int(first["articlesCount"])
    rng = random.Random(seed)
    offsets = {0} | {rng.randrange(max(1, count - 20)) for _ in range(pages - 1)}
    slugs: list[str] = []
    usernames: list[str] = []
    # The one-article first page gives a cursor even when the whole list fits in one page.
    cursors: list[str] = [first["nextCursor"]] if isinstance(first.get("nextCursor"), str) else []
    words: set[str] = set()
    for offset in sorted(offsets):
        response = await client.get("articles", params={"limit": 20, "offset": offset})
        if offset and response.status_code >= 500:
            # A deep offset can outlast the target's statement timeout: sample elsewhere.
            continue
        page = check(response, "GET /articles")
        if isinstance(page.get("nextCursor"), str):
            cursors.append(page["nextCursor"])
        for article in page["articles"]:
            slugs.append(article["slug"])
            usernames.append(article["author"]["username"])
            words.update(word.lower() for word in re.findall(r"[A-Za-z]{4,}", article["title"]))
    return Survey(count, sorted(set(slugs)), sorted(set(usernames)), cursors, sorted(words))


def read_accounts(path: Path, *, password: str | None) -> list[tuple[str, str]]:
    """Existing accounts of the target, one `email [password]` a line (the password defaults
    to `password`); blank lines and lines starting with # are skipped."""
    credentials: list[tuple[str, str]] = []
    for line in path.read_text().splitlines():
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        secret = fields[1] if len(fields) > 1 else password
        if secret is None:
            raise FixtureError(f"{path}: no password for {fields[0]} (give --accounts-password)")
        credentials.append((fields[0], secret))
    if not credentials:
        raise FixtureError(f"{path}: no accounts")
    return credentials


async def sign_in(
    client: httpx.AsyncClient, credentials: list[tuple[str, str]], *, concurrency: int
) -> list[User]:
    """Sign the accounts in for the feed and login scenarios: on a big data set their feeds
    are the data set's, not the few follows of the fixture's users."""

    async def login(email: str, secret: str) -> User:
        body = {"user": {"email": email, "password": secret}}
        user = check(await client.post("users/login", json=body), f"login {email}")["user"]
        return User(user["username"], email, secret, user["token"])

    return await _all((login(email, secret) for email, secret in credentials), concurrency)

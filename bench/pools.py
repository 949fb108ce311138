"""Request pools drawn from the fixture, and the Lua data file that hands them to wrk.

Every request a scenario can send is built here, in Python, so the Lua driver only picks
from lists; the ceiling app serves the captured answers to the very same read requests.
"""

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import quote, urlencode

from bench.fixture import Fixture, Survey, User
from bench.scenarios import ALL_KINDS, READ_KINDS, Scenario

PAGE = 20
BROWSED_PAGES = 50
T = TypeVar("T")


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    token: str | None = None
    body: str | None = None

    def headers(self) -> dict[str, str]:
        """The headers the Lua driver's build() sends along with the method, path and body."""
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Token {self.token}"
        if self.body is not None:
            headers["Content-Type"] = "application/json"
        return headers


@dataclass(frozen=True)
class Plan:
    prefix: str
    run: str
    pools: Mapping[str, Sequence[Request]]
    authors: Sequence[str]
    tags: Sequence[str]


def _query(path: str, **params: object) -> str:
    return f"{path}?{urlencode(params)}"


def build_plan(
    fixture: Fixture,
    survey: Survey,
    *,
    prefix: str,
    readers: Sequence[User] = (),
    size: int = 200,
    seed: int = 3,
) -> Plan:
    """At most `size` distinct requests per kind, reproducible for a given seed. The feed and
    login requests are the `readers`' when given, else the fixture users'."""
    rng = random.Random(seed)
    users = fixture.users
    slugs = sorted({article.slug for article in fixture.articles} | set(survey.slugs))
    usernames = sorted({user.username for user in users} | set(survey.usernames))
    last_offset = max(0, survey.articles_count - PAGE)
    deep_offsets = sorted(rng.sample(range(last_offset + 1), min(size, last_offset + 1)))
    # Where readers of a front page go: its first pages.
    near_offsets = range(0, min(last_offset, (BROWSED_PAGES - 1) * PAGE) + 1, PAGE)
    readers = readers or users
    words = survey.words or fixture.words

    def sample(items: Sequence[T]) -> list[T]:
        return list(items) if len(items) <= size else rng.sample(list(items), size)

    def comment(index: int) -> Request:
        body = " ".join(rng.choice(fixture.words) for _ in range(12))
        return Request(
            "POST",
            f"{prefix}/articles/{quote(rng.choice(slugs))}/comments",
            rng.choice(users).token,
            json.dumps({"comment": {"body": f"{body} {index}"}}),
        )

    pools: dict[str, list[Request]] = {
        "list": [
            Request("GET", _query(f"{prefix}/articles", limit=PAGE, offset=offset))
            for offset in near_offsets
        ],
        "list_deep": [
            Request("GET", _query(f"{prefix}/articles", limit=PAGE, offset=offset))
            for offset in deep_offsets
        ],
        "list_cursor": [
            Request("GET", _query(f"{prefix}/articles", limit=PAGE, cursor=cursor))
            for cursor in survey.cursors
        ],
        "article": [Request("GET", f"{prefix}/articles/{quote(slug)}") for slug in sample(slugs)],
        "tags": [Request("GET", f"{prefix}/tags")],
        "profile": [
            Request("GET", f"{prefix}/profiles/{quote(username)}") for username in sample(usernames)
        ],
        "feed": [
            Request("GET", _query(f"{prefix}/articles/feed", limit=PAGE, offset=offset), user.token)
            for user in readers
            for offset in (0, PAGE)
        ][:size],
        "search": [
            Request("GET", _query(f"{prefix}/articles", q=word, limit=PAGE))
            for word in sample(sorted(set(words)))
        ],
        "comment": [comment(index) for index in range(size)],
        "favorite": [
            Request(
                rng.choice(("POST", "DELETE")),
                f"{prefix}/articles/{quote(rng.choice(slugs))}/favorite",
                rng.choice(users).token,
            )
            for _ in range(size)
        ],
        "login": [
            Request(
                "POST",
                f"{prefix}/users/login",
                body=json.dumps({"user": {"email": user.email, "password": user.password}}),
            )
            for user in sample(readers)
        ],
    }
    return Plan(
        prefix=prefix,
        run=fixture.run,
        pools=pools,
        authors=[user.token for user in users],
        tags=fixture.tags,
    )


def create_article(plan: Plan, nonce: str, counter: int, rng: random.Random) -> Request:
    """What the Lua driver's create_article() sends, for probing a failing scenario."""
    title = f"bench {plan.run} {nonce} 0-{counter}"
    article = {
        "title": title,
        "description": "written under load",
        "body": "A short article written by the benchmark under load.",
        "tagList": [rng.choice(plan.tags)],
    }
    return Request(
        "POST",
        f"{plan.prefix}/articles",
        rng.choice(plan.authors),
        json.dumps({"article": article}),
    )


def lua_string(text: str) -> str:
    """A Lua 5.1 string literal: LuaJIT knows no \\u escapes, so non-ASCII goes as bytes."""
    out = ['"']
    for byte in text.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 32 <= byte < 127:
            out.append(char)
        else:
            out.append(f"\\{byte:03d}")
    out.append('"')
    return "".join(out)


def lua_value(value: object) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return lua_string(value)
    if isinstance(value, Request):
        fields = {"method": value.method, "path": value.path}
        if value.token is not None:
            fields["token"] = value.token
        if value.body is not None:
            fields["body"] = value.body
        return lua_value(fields)
    if isinstance(value, Mapping):
        items = ", ".join(f"[{lua_string(str(k))}] = {lua_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    if isinstance(value, Sequence):
        return "{" + ", ".join(lua_value(item) for item in value) + "}"
    raise TypeError(f"no Lua form for {type(value).__name__}")


def to_lua(plan: Plan, scenarios: Sequence[Scenario]) -> str:
    """The data file the driver loads with dofile(): pools and each scenario's weights."""
    used = {kind for scenario in scenarios for kind in scenario.kinds}
    unknown = used - set(ALL_KINDS)
    if unknown:
        raise ValueError(f"unknown request kinds: {sorted(unknown)}")
    empty = sorted(kind for kind in used if kind in plan.pools and not plan.pools[kind])
    if empty:
        raise ValueError(f"no requests for: {', '.join(empty)}")
    data = {
        "prefix": plan.prefix,
        "run": plan.run,
        "authors": list(plan.authors),
        "tags": list(plan.tags),
        "pools": {kind: list(plan.pools[kind]) for kind in sorted(used) if kind in plan.pools},
        "scenarios": {
            scenario.name: [
                {"kind": kind, "weight": float(weight)} for kind, weight in scenario.weights.items()
            ]
            for scenario in scenarios
        }
        | {
            scenario.stream_name: [{"kind": scenario.alongside.kind, "weight": 1.0}]
            for scenario in scenarios
            if scenario.alongside is not None
        },
    }
    return "-- Generated by `python -m bench run`.\nreturn " + lua_value(data) + "\n"


def read_requests(plan: Plan, kinds: Sequence[str] = READ_KINDS) -> list[Request]:
    return [request for kind in kinds for request in plan.pools.get(kind, ())]

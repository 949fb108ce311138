"""The scenarios: each is a weighted mix of request kinds, drawn per request by the Lua driver."""

from collections.abc import Mapping
from dataclasses import dataclass

READ_KINDS = ("list", "list_deep", "list_cursor", "article", "tags", "profile", "feed", "search")
WRITE_KINDS = ("comment", "favorite", "create")
LOGIN_KIND = "login"
ALL_KINDS = (*READ_KINDS, *WRITE_KINDS, LOGIN_KIND)

# About 85 % reads and 15 % writes, shaped like a publishing site: mostly lists and articles.
MIX: Mapping[str, float] = {
    "list": 30,
    "article": 25,
    "feed": 10,
    "profile": 8,
    "tags": 7,
    "search": 5,
    "comment": 5,
    "favorite": 6,
    "create": 4,
}


@dataclass(frozen=True)
class Stream:
    """A second client sending one kind of request alongside a scenario, one at a time with a
    pause after each answer: a steady stream at about 1 / (pause + latency) per second."""

    kind: str
    pause_s: float


@dataclass(frozen=True)
class Scenario:
    name: str
    weights: Mapping[str, float]
    description: str
    # Measured twice, back to back: the scenario alone, then with this stream beside it.
    alongside: Stream | None = None

    @property
    def read_only(self) -> bool:
        return self.alongside is None and all(kind in READ_KINDS for kind in self.weights)

    @property
    def kinds(self) -> list[str]:
        """Every kind of request the scenario sends, its stream's included."""
        stream = [self.alongside.kind] if self.alongside else []
        return [*self.weights, *(kind for kind in stream if kind not in self.weights)]

    @property
    def stream_name(self) -> str:
        """The name the driver knows the stream by."""
        return f"{self.name}.alongside"


def _only(mix: Mapping[str, float], kinds: tuple[str, ...]) -> dict[str, float]:
    return {kind: weight for kind, weight in mix.items() if kind in kinds}


def _with_logins(mix: Mapping[str, float], share: float) -> dict[str, float]:
    total = sum(mix.values())
    scaled = {kind: weight * (1 - share) for kind, weight in mix.items()}
    scaled[LOGIN_KIND] = total * share
    return scaled


SCENARIOS: dict[str, Scenario] = {
    scenario.name: scenario
    for scenario in (
        Scenario(
            "list", {"list": 1}, "GET /articles, anonymous, random offsets in the first 50 pages"
        ),
        Scenario(
            "list_cursor",
            {"list_cursor": 1},
            "GET /articles?cursor=, anonymous, pages from all over (servers with nextCursor)",
        ),
        Scenario("article", {"article": 1}, "GET /articles/:slug, anonymous"),
        Scenario("tags", {"tags": 1}, "GET /tags"),
        Scenario("profile", {"profile": 1}, "GET /profiles/:username, anonymous"),
        Scenario("feed", {"feed": 1}, "GET /articles/feed with a token, first pages"),
        Scenario("search", {"search": 1}, "GET /articles?q=<word> (plain list without search)"),
        # The mix's two halves alone: what each costs without the other, against which the
        # mix's own cost shows what its writes do to its reads (caches made stale, mostly).
        Scenario("mix_reads", _only(MIX, READ_KINDS), "the mix's reads alone, in its proportions"),
        # Last of the reads: deep offsets leave long queries running in the database after their
        # window, which would slow whatever ran next.
        Scenario(
            "list_deep", {"list_deep": 1}, "GET /articles, anonymous, random offsets over all"
        ),
        # First of the rest: the logins that `login` leaves queued, and the jobs writes leave
        # behind, would otherwise still be running while it measures reads alone.
        Scenario(
            "article_logins",
            {"article": 1},
            "GET /articles/:slug alone, then beside a steady stream of logins (one a second)",
            alongside=Stream(LOGIN_KIND, pause_s=1.0),
        ),
        Scenario("comment", {"comment": 1}, "POST /articles/:slug/comments"),
        Scenario("favorite", {"favorite": 1}, "POST or DELETE /articles/:slug/favorite"),
        Scenario("create", {"create": 1}, "POST /articles with a unique title"),
        Scenario(
            "mix_writes", _only(MIX, WRITE_KINDS), "the mix's writes alone, in its proportions"
        ),
        Scenario("login", {LOGIN_KIND: 1}, "POST /users/login (password hashing included)"),
        Scenario("mix", dict(MIX), "85 % reads, 15 % writes"),
        Scenario("mix_login", _with_logins(MIX, 0.05), "the mix with 5 % logins"),
    )
}


def select(names: str | None) -> list[Scenario]:
    """Scenarios named in a comma-separated list (all when None), in the canonical order."""
    if names is None:
        return list(SCENARIOS.values())
    wanted = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenarios: {', '.join(unknown)} (known: {', '.join(SCENARIOS)})")
    return [scenario for name, scenario in SCENARIOS.items() if name in wanted]

"""The benchmark harness' pure logic: wrk's output, request pools, the Lua data file, results.

None of it needs wrk or a server.
"""

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

from bench import ceiling, cli, fixture, pools, report, wrk
from bench.fixture import Article, Fixture, Survey, User
from bench.pools import Request
from bench.scenarios import LOGIN_KIND, READ_KINDS, SCENARIOS, WRITE_KINDS, select

DRIVER_OUTPUT = json.dumps(
    {
        "requests": 5000,
        "duration_us": 2_000_000,
        "bytes": 123_456,
        "errors": {"connect": 1, "read": 2, "write": 0, "status": 7, "timeout": 3},
        "latency_us": {
            "min": 90,
            "mean": 1234.5,
            "stdev": 10.0,
            "max": 48_000,
            "p50": 1100,
            "p90": 2500,
            "p95": 3000,
            "p99": 9870,
            "p99.9": 20_000,
        },
    }
)


def make_fixture(users: int = 3, articles: int = 4) -> Fixture:
    return Fixture(
        base_url="http://127.0.0.1:8000/api/",
        run="abc123",
        created_at="2026-01-01T00:00:00+00:00",
        users=[
            User(f"u{i}", f"u{i}@bench.example", f"password-{i}", f"token-{i}")
            for i in range(users)
        ],
        articles=[Article(f"slug-{i}", f"u{i % users}", ["data"]) for i in range(articles)],
    )


class TestParse:
    def test_units_and_rates(self) -> None:
        stats = wrk.parse(DRIVER_OUTPUT)
        assert stats.rps == 2500.0
        assert stats.duration_s == 2.0
        assert stats.latency_ms["p50"] == 1.1
        assert stats.latency_ms["p99"] == 9.87
        assert stats.latency_ms["max"] == 48.0

    def test_errors_count_statuses_and_sockets(self) -> None:
        stats = wrk.parse(DRIVER_OUTPUT)
        assert stats.error_count == 13
        assert stats.to_json()["error_count"] == 13

    def test_nothing_measured(self) -> None:
        raw = json.loads(DRIVER_OUTPUT) | {"requests": 0, "duration_us": 0}
        assert wrk.parse(json.dumps(raw)).rps == 0.0


class TestCommand:
    def test_pinned_to_a_core(self) -> None:
        load = wrk.Load(connections=32, threads=1, timeout_s=10, pin=0)
        args = wrk.command("http://127.0.0.1:8000/api", load, 20)
        assert args[:3] == ["taskset", "-c", "0"]
        assert "--connections=32" in args
        assert "--duration=20s" in args
        assert args[-1] == "http://127.0.0.1:8000/"

    def test_durations_below_a_second_round_up(self) -> None:
        load = wrk.Load(connections=2, threads=1, timeout_s=10, pin=None)
        args = wrk.command("http://localhost:9/", load, 0.2)
        assert args[0] == "wrk"
        assert "--duration=1s" in args


class TestScenarios:
    def test_mix_is_85_percent_reads(self) -> None:
        weights = SCENARIOS["mix"].weights
        reads = sum(weights.get(kind, 0) for kind in READ_KINDS)
        writes = sum(weights[kind] for kind in WRITE_KINDS)
        assert reads / (reads + writes) == pytest.approx(0.85)

    def test_the_mixs_halves_keep_its_proportions(self) -> None:
        names = ("mix", "mix_reads", "mix_writes")
        mix, reads, writes = (SCENARIOS[name].weights for name in names)
        assert {**reads, **writes} == mix
        assert set(reads) == set(mix) & set(READ_KINDS)
        assert set(writes) == set(mix) & set(WRITE_KINDS)
        assert SCENARIOS["mix_reads"].read_only
        assert not SCENARIOS["mix_writes"].read_only

    def test_mix_with_logins(self) -> None:
        weights = SCENARIOS["mix_login"].weights
        total = sum(weights.values())
        assert weights[LOGIN_KIND] / total == pytest.approx(0.05)
        reads = sum(weights.get(kind, 0) for kind in READ_KINDS)
        writes = sum(weights[kind] for kind in WRITE_KINDS)
        assert reads / (reads + writes) == pytest.approx(0.85)

    def test_select_keeps_the_canonical_order(self) -> None:
        assert [s.name for s in select("mix, list")] == ["list", "mix"]

    def test_select_unknown(self) -> None:
        with pytest.raises(ValueError, match="unknown scenarios: nope"):
            select("list,nope")

    def test_search_is_a_read(self) -> None:
        assert SCENARIOS["search"].read_only
        assert not SCENARIOS["mix"].read_only

    def test_reads_beside_logins(self) -> None:
        scenario = SCENARIOS["article_logins"]
        # Not a read for the ceiling, which cannot log anyone in.
        assert not scenario.read_only
        assert scenario.weights == {"article": 1}
        assert scenario.kinds == ["article", LOGIN_KIND]
        assert scenario.alongside is not None
        assert scenario.alongside.pause_s > 0


class TestPlan:
    def test_deep_offsets_span_the_whole_data_set(self) -> None:
        survey = Survey(articles_count=1_000_000, slugs=["far-away"], usernames=["someone"])
        plan = pools.build_plan(make_fixture(), survey, prefix="/api", size=50)
        offsets = [int(r.path.rsplit("offset=", 1)[1]) for r in plan.pools["list_deep"]]
        assert len(offsets) == 50
        assert max(offsets) <= 1_000_000 - pools.PAGE
        assert max(offsets) > 100_000
        assert all(
            r.path.startswith("/api/articles?limit=20&offset=") for r in plan.pools["list_deep"]
        )

    def test_browsed_offsets_are_the_first_pages(self) -> None:
        survey = Survey(articles_count=1_000_000, slugs=[], usernames=[])
        plan = pools.build_plan(make_fixture(), survey, prefix="/api")
        offsets = [int(r.path.rsplit("offset=", 1)[1]) for r in plan.pools["list"]]
        assert offsets == [page * pools.PAGE for page in range(pools.BROWSED_PAGES)]

    def test_cursors_and_words_come_from_the_survey(self) -> None:
        survey = Survey(10, [], [], cursors=["abc", "def"], words=["griffin"])
        plan = pools.build_plan(make_fixture(), survey, prefix="/api")
        assert [r.path for r in plan.pools["list_cursor"]] == [
            "/api/articles?limit=20&cursor=abc",
            "/api/articles?limit=20&cursor=def",
        ]
        assert [r.path for r in plan.pools["search"]] == ["/api/articles?q=griffin&limit=20"]

    def test_readers_take_the_feed_and_logins(self) -> None:
        reader = User("reader", "reader@example.com", "secret-pass", "reader-token")
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api", readers=[reader])
        assert {r.token for r in plan.pools["feed"]} == {"reader-token"}
        assert [json.loads(r.body or "")["user"]["email"] for r in plan.pools["login"]] == [
            "reader@example.com"
        ]

    def test_small_data_set(self) -> None:
        survey = Survey(articles_count=3, slugs=[], usernames=[])
        plan = pools.build_plan(make_fixture(), survey, prefix="/api")
        assert [r.path for r in plan.pools["list"]] == ["/api/articles?limit=20&offset=0"]

    def test_reads_include_surveyed_articles_and_authors(self) -> None:
        survey = Survey(articles_count=10, slugs=["far-away"], usernames=["some one"])
        plan = pools.build_plan(make_fixture(), survey, prefix="/api")
        assert Request("GET", "/api/articles/far-away") in plan.pools["article"]
        assert Request("GET", "/api/profiles/some%20one") in plan.pools["profile"]

    def test_authenticated_requests(self) -> None:
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api")
        assert all(r.token and r.token.startswith("token-") for r in plan.pools["feed"])
        assert all(r.token for r in plan.pools["comment"] + plan.pools["favorite"])
        assert {r.method for r in plan.pools["favorite"]} == {"POST", "DELETE"}
        login = json.loads(plan.pools["login"][0].body or "")
        assert set(login["user"]) == {"email", "password"}
        assert plan.pools["login"][0].token is None

    def test_headers_match_the_driver(self) -> None:
        assert Request("GET", "/api/tags").headers() == {"Accept": "application/json"}
        assert Request("POST", "/x", token="t", body="{}").headers() == {
            "Accept": "application/json",
            "Authorization": "Token t",
            "Content-Type": "application/json",
        }

    def test_search_words(self) -> None:
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api")
        assert all(r.path.startswith("/api/articles?q=") for r in plan.pools["search"])

    def test_reproducible(self) -> None:
        survey = Survey(500, ["a"], ["b"])
        first = pools.build_plan(make_fixture(), survey, prefix="/api")
        second = pools.build_plan(make_fixture(), survey, prefix="/api")
        assert first.pools["list"] == second.pools["list"]


class TestLua:
    def test_plain_string(self) -> None:
        assert pools.lua_string("GET /api/tags") == '"GET /api/tags"'

    def test_quotes_backslashes_and_control_characters(self) -> None:
        assert pools.lua_string('a"b\\c\nd') == '"a\\"b\\\\c\\010d"'

    def test_non_ascii_goes_as_utf8_bytes(self) -> None:
        # LuaJIT has no \u escapes: "é" is the two bytes C3 A9.
        assert pools.lua_string("é") == '"\\195\\169"'

    def test_values(self) -> None:
        assert pools.lua_value([1, 2.5, True, None]) == "{1, 2.5, true, nil}"
        assert pools.lua_value({"a": "b"}) == '{["a"] = "b"}'
        assert pools.lua_value(Request("GET", "/x", token="t")) == (
            '{["method"] = "GET", ["path"] = "/x", ["token"] = "t"}'
        )

    def test_data_file_has_only_the_pools_it_needs(self) -> None:
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api")
        text = pools.to_lua(plan, select("tags,create"))
        assert text.splitlines()[1].startswith("return {")
        assert '["tags"] = {{["method"] = "GET", ["path"] = "/api/tags"}}' in text
        assert '["list"]' not in text
        assert '["create"] = {{["kind"] = "create", ["weight"] = 1.0}}' in text
        assert '["authors"] = {"token-0", "token-1", "token-2"}' in text

    def test_a_stream_is_a_scenario_of_its_own_kind(self) -> None:
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api")
        text = pools.to_lua(plan, select("article_logins"))
        assert '["article_logins"] = {{["kind"] = "article", ["weight"] = 1.0}}' in text
        assert '["article_logins.alongside"] = {{["kind"] = "login", ["weight"] = 1.0}}' in text
        assert '["login"] = {{["method"] = "POST", ["path"] = "/api/users/login"' in text

    def test_empty_pool_is_refused(self) -> None:
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api")
        empty = pools.Plan(plan.prefix, plan.run, {**plan.pools, "feed": []}, plan.authors, [])
        with pytest.raises(ValueError, match="no requests for: feed"):
            pools.to_lua(empty, select("feed"))


class TestDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"), [("20s", 20), ("2m", 120), ("1.5", 1.5), ("0", 0), ("500ms", 0.5)]
    )
    def test_forms(self, text: str, seconds: float) -> None:
        assert cli.duration(text) == seconds

    def test_nonsense(self) -> None:
        with pytest.raises(Exception, match="not a duration"):
            cli.duration("soon")


class TestProbe:
    def test_rate_limits_are_seen(self) -> None:
        plan = pools.build_plan(make_fixture(), Survey(10, [], []), prefix="/api")
        seen: list[httpx.Request] = []

        def handler(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(429 if request.method == "POST" else 200)

        transport = httpx.MockTransport(handler)
        with httpx.Client(transport=transport, base_url="http://target/") as client:
            statuses = cli.probe(client, plan, SCENARIOS["create"])
        assert statuses == {429: cli.PROBE_REQUESTS}
        titles = {json.loads(request.content)["article"]["title"] for request in seen}
        assert len(titles) == cli.PROBE_REQUESTS
        assert all(title.startswith("bench abc123 ") for title in titles)
        assert seen[0].headers["Authorization"].startswith("Token token-")


class TestCeiling:
    @pytest.mark.anyio
    async def test_serves_captured_bodies_by_path_and_query(self) -> None:
        app = ceiling.app({"/api/articles?limit=20&offset=0": b'{"articles":[]}'})
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ceiling") as client:
            found = await client.get("/api/articles?limit=20&offset=0")
            missing = await client.get("/api/articles?limit=20&offset=20")
        assert found.status_code == 200
        assert found.content == b'{"articles":[]}'
        assert found.headers["content-type"] == "application/json"
        assert missing.status_code == 404


def results(articles: int, p99: float, *, ceiling_rps: float | None = 1000.0) -> dict[str, Any]:
    stats = wrk.parse(DRIVER_OUTPUT).to_json()
    stats["latency_ms"]["p99"] = p99
    entry: dict[str, Any] = {"name": "list", "target": stats}
    if ceiling_rps is not None:
        entry["ceiling"] = stats | {"rps": ceiling_rps}
        entry["share_of_ceiling"] = stats["rps"] / ceiling_rps
    write = {"name": "create", "target": stats, "note": "rate limited: start the server with X"}
    return {
        "version": report.RESULTS_VERSION,
        "meta": {
            "target": "http://t/api",
            "articles_count": articles,
            "connections": 2,
            "duration_s": 1.0,
            "started_at": "now",
        },
        "scenarios": [entry, write],
    }


class TestReport:
    def test_table(self) -> None:
        lines = report.table(results(10, 9.87)).splitlines()
        assert lines[0].split() == [
            "scenario", "req/s", "p50", "ms", "p90", "ms", "p99", "ms", "max", "ms",
            "errors", "ceiling", "share",
        ]  # fmt: skip
        assert lines[2].split() == [
            "list", "2500", "1.1", "2.5", "9.9", "48.0", "13", "1000", "250%",
        ]  # fmt: skip
        assert lines[3].split()[-2:] == ["-", "-"]
        assert "rate limited" in lines[4]

    def test_table_compares_a_scenario_with_and_without_its_stream(self) -> None:
        beside = results(10, 13.0)
        entry = beside["scenarios"][0]
        alone = entry["target"] | {"latency_ms": entry["target"]["latency_ms"] | {"p99": 10.0}}
        stream = entry["target"] | {"rps": 0.8}
        entry |= {"alone": alone, "stream": {"kind": "login", **stream}, "p99_rise": 0.3}
        lines = report.table(beside).splitlines()
        assert lines[3].split() == [
            "^", "beside", "0.80", "login/s", "(p99", "13", "ms,", "13", "errors);",
            "alone:", "2500", "req/s,", "p99", "10.0", "ms;", "p99", "rise", "+30%",
        ]  # fmt: skip

    def test_charts(self, tmp_path: Path) -> None:
        report.scenario_chart(results(10, 9.87), tmp_path / "one.png")
        report.size_chart(
            [results(1_000_000, 50.0), results(10_000, 5.0, ceiling_rps=None)],
            tmp_path / "sizes.png",
        )
        for name in ("one.png", "sizes.png"):
            assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")

    def test_load_refuses_other_files(self, tmp_path: Path) -> None:
        path = tmp_path / "x.json"
        path.write_text("{}")
        with pytest.raises(ValueError, match="not a results file"):
            report.load(path)


class TestAccounts:
    def test_lines_with_and_without_a_password(self, tmp_path: Path) -> None:
        path = tmp_path / "accounts.txt"
        path.write_text("# seeded\na@example.com\n\nb@example.com own-password\n")
        assert fixture.read_accounts(path, password="shared") == [
            ("a@example.com", "shared"),
            ("b@example.com", "own-password"),
        ]

    def test_a_missing_password_is_an_error(self, tmp_path: Path) -> None:
        path = tmp_path / "accounts.txt"
        path.write_text("a@example.com\n")
        with pytest.raises(fixture.FixtureError, match="accounts-password"):
            fixture.read_accounts(path, password=None)

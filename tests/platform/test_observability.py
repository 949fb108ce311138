"""Logs, request ids, metrics and traces, seen from the outside: in the lines written to
stderr, the response headers, the `/metrics` page and the exported spans."""

import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import structlog
from asgi_lifespan import LifespanManager
from fastapi import APIRouter, FastAPI
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from prometheus_client.parser import text_string_to_metric_families

from conduit.app import create_app
from conduit.platform import middleware
from conduit.platform.middleware import RouteTemplates
from conduit.platform.observability import tracing
from conduit.platform.observability.logging import (
    configure_logging,
    get_logger,
    json_line_writer,
)
from conduit.platform.settings import Environment, LogFormat, LogLevel, Settings
from tests.helpers import PASSWORD, register, unique_name
from tests.platform.backends import on_redis
from tests.platform.server import serving

pytestmark = pytest.mark.anyio

ReadLogs = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def logs(capsys: pytest.CaptureFixture[str]) -> Iterator[ReadLogs]:
    """The process's logging as `conduit serve` sets it up, in JSON; the lines written so far."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging(
        Settings(
            _env_file=None,
            environment=Environment.test,
            log_format=LogFormat.json,
            log_level=LogLevel.DEBUG,
        )
    )

    def read() -> list[dict[str, Any]]:
        # Every line is one JSON object: json.loads fails the test on anything else.
        return [json.loads(line) for line in capsys.readouterr().err.splitlines() if line]

    yield read
    root.handlers[:] = handlers
    root.setLevel(level)


def access_lines(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["logger"] == "conduit.access"]


async def test_access_line_carries_request_user_route_status_and_duration(
    client: httpx.AsyncClient, logs: ReadLogs
) -> None:
    account = await register(client)
    logs()
    response = await client.get(f"/profiles/{account.username}", headers=account.headers)
    assert response.status_code == 200

    [line] = access_lines(logs())
    assert line["event"] == "request"
    assert line["level"] == "info"
    assert line["method"] == "GET"
    assert line["path"] == f"/api/profiles/{account.username}"
    assert line["route"] == "/api/profiles/{username}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float)
    assert isinstance(line["user_id"], int)
    assert line["request_id"] == response.headers["X-Request-ID"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])


async def test_request_id_is_accepted_echoed_and_on_every_line(
    app: FastAPI, client: httpx.AsyncClient, logs: ReadLogs
) -> None:
    @app.get("/api/test/logs-twice")
    async def logs_twice() -> dict[str, str]:
        get_logger("conduit.test").info("from structlog")
        logging.getLogger("conduit.test").warning("from the standard library")
        return {}

    response = await client.get("/test/logs-twice", headers={"X-Request-ID": "lb-7f3a.42"})
    assert response.headers["X-Request-ID"] == "lb-7f3a.42"
    lines = logs()
    assert {line["event"] for line in lines} >= {
        "from structlog",
        "from the standard library",
        "request",
    }
    assert all(line["request_id"] == "lb-7f3a.42" for line in lines)


@pytest.mark.parametrize("sent", [None, "", "has spaces", "x" * 129, 'quote"s', "ünïcode"])
async def test_missing_or_invalid_request_id_is_replaced(
    client: httpx.AsyncClient, sent: str | None
) -> None:
    headers = {"X-Request-ID": sent.encode()} if sent is not None else {}
    response = await client.get("/tags", headers=headers)
    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["X-Request-ID"])


async def test_request_id_header_is_readable_by_browsers(client: httpx.AsyncClient) -> None:
    response = await client.get("/tags", headers={"Origin": "http://localhost:4200"})
    assert "x-request-id" in response.headers["access-control-expose-headers"].lower()


async def test_credentials_and_secrets_never_reach_the_logs(
    client: httpx.AsyncClient, logs: ReadLogs
) -> None:
    account = await register(client)
    await client.post("/users/login", json={"user": {"email": account.email, "password": PASSWORD}})
    await client.get("/user", headers=account.headers)
    get_logger("conduit.test").info(
        "careless", password=PASSWORD, authorization=account.headers, nested={"token": "t0k"}
    )
    text = json.dumps(logs())
    assert PASSWORD not in text
    assert account.token not in text
    assert "t0k" not in text
    assert '"password": "[redacted]"' in text


async def test_server_and_library_records_share_the_format(logs: ReadLogs) -> None:
    logging.getLogger("_granian").info("Spawning worker-%d with PID: %d", 1, 42)
    # Only this logger's: the event loop may log which selector it uses when the test starts.
    [line] = [line for line in logs() if line["logger"] == "_granian"]
    assert line["logger"] == "_granian"
    assert line["event"] == "Spawning worker-1 with PID: 42"
    assert line["level"] == "info"


async def test_errors_are_logged_with_their_traceback(
    app: FastAPI, client: httpx.AsyncClient, logs: ReadLogs
) -> None:
    @app.get("/api/test/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    response = await client.get("/test/boom")
    assert response.status_code == 500
    lines = logs()
    [error] = [line for line in lines if line["level"] == "error"]
    assert "RuntimeError: boom" in error["exception"]
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert access_lines(lines)[0]["status"] == 500


# Without limits to take, the same answer is replayed from the third request on.
@pytest.mark.parametrize("limits", [True, False], ids=["limited", "replayed"])
async def test_a_read_answered_from_the_cache_is_logged_like_a_routed_one(
    client: httpx.AsyncClient, app: FastAPI, logs: ReadLogs, limits: bool
) -> None:
    app.state.limiter.enabled = limits
    account = await register(client)
    logs()
    answers = [await client.get(f"/profiles/{account.username}") for _ in range(5)]
    lines = access_lines(logs())
    assert len(lines) == 5
    for line, answer in zip(lines, answers, strict=True):
        assert {key: line[key] for key in ("method", "path", "route", "status")} == {
            "method": "GET",
            "path": f"/api/profiles/{account.username}",
            "route": "/api/profiles/{username}",
            "status": 200,
        }
        assert line["request_id"] == answer.headers["X-Request-ID"]
    assert [list(line) for line in lines[1:]] == [list(lines[0])] * 4


def test_the_access_line_writer_renders_as_the_formatter_does(
    logs: ReadLogs, capsys: pytest.CaptureFixture[str]
) -> None:
    logger = logging.getLogger("conduit.access")
    writer = json_line_writer(logger)
    assert writer is not None
    fields = {"method": "GET", "status": 200, "token": "t0k", "nested": {"password": "p"}}
    with structlog.contextvars.bound_contextvars(request_id="r-1", user_id=7):
        writer.write(logging.INFO, "request", **fields)
        get_logger("conduit.access").info("request", **fields)
        writer.write(logging.DEBUG, "quiet", **fields)
    written, formatted, quiet = logs()
    del written["timestamp"], formatted["timestamp"]
    assert list(written.items()) == list(formatted.items())
    assert written["token"] == written["nested"]["password"] == "[redacted]"
    assert quiet["level"] == "debug"

    logging.getLogger().handlers[0].setLevel(logging.INFO)
    writer.write(logging.DEBUG, "below the handler's level")
    assert logs() == []


def test_no_access_line_writer_when_other_handlers_must_see_the_records(
    logs: ReadLogs,
) -> None:
    logger = logging.getLogger("conduit.access")
    assert json_line_writer(logger) is not None
    extra = logging.NullHandler()
    for holder in (logging.getLogger(), logger):
        holder.addHandler(extra)
        try:
            assert json_line_writer(logger) is None
        finally:
            holder.removeHandler(extra)
    logger.propagate = False
    try:
        assert json_line_writer(logger) is None
    finally:
        logger.propagate = True


def test_console_format_is_for_people(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging(
            Settings(_env_file=None, environment=Environment.test, log_format=LogFormat.console)
        )
        get_logger("conduit.test").info("readable", answer=42)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    [line] = capsys.readouterr().err.splitlines()
    assert "readable" in line
    assert "answer=42" in line
    assert not line.startswith("{")


def samples(page: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(page)
        for sample in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


async def scrape(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = await client.get("http://conduit.test/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return samples(response.text)


async def test_metrics_count_by_route_template_not_raw_path(client: httpx.AsyncClient) -> None:
    before = await scrape(client)
    first, second = unique_name("ghost"), unique_name("ghost")
    for name in (first, second):
        assert (await client.get(f"/profiles/{name}")).status_code == 404
    await client.get("/no/such/route")
    await client.request("BREW", "/tags")
    await client.get("http://conduit.test/health/live")
    page = (await client.get("http://conduit.test/metrics")).text
    after = samples(page)

    profile = {"handler": "/api/profiles/{username}", "method": "GET"}
    assert (
        value(after, "http_requests_total", **profile, status="404")
        - value(before, "http_requests_total", **profile, status="404")
        == 2
    )
    assert (
        value(after, "http_request_duration_seconds_count", **profile)
        - value(before, "http_request_duration_seconds_count", **profile)
        == 2
    )
    assert value(after, "http_requests_total", handler="none", method="GET", status="404") > 0
    assert value(after, "http_requests_total", handler="/api/tags", method="OTHER", status="405")
    assert first not in page
    assert second not in page
    assert "/no/such/route" not in page
    assert 'handler="/health/live"' not in page
    assert value(after, "http_requests_in_flight") >= 1


@pytest.mark.parametrize("limits", [True, False], ids=["limited", "replayed"])
async def test_reads_answered_from_the_cache_are_counted_under_their_route(
    client: httpx.AsyncClient, app: FastAPI, limits: bool
) -> None:
    app.state.limiter.enabled = limits
    before = await scrape(client)
    for _ in range(3):  # routed once, then answered from the cache (and replayed)
        assert (await client.get("/tags")).status_code == 200
    etag = (await client.get("/tags")).headers["etag"]
    assert (await client.get("/tags", headers={"If-None-Match": etag})).status_code == 304
    after = await scrape(client)

    def counted(status: str) -> float:
        labels = {"handler": "/api/tags", "method": "GET", "status": status}
        return value(after, "http_requests_total", **labels) - value(
            before, "http_requests_total", **labels
        )

    assert (counted("200"), counted("304")) == (4, 1)
    hits = value(after, "conduit_cache_hits_total", cache="tags") - value(
        before, "conduit_cache_hits_total", cache="tags"
    )
    assert hits == 4


async def test_server_errors_are_counted(app: FastAPI, client: httpx.AsyncClient) -> None:
    @app.get("/api/test/fails")
    async def fails() -> None:
        raise RuntimeError("boom")

    await client.get("/test/fails")
    await client.get("/test/fails")
    found = await scrape(client)
    labels = {"handler": "/api/test/fails", "method": "GET", "status": "500"}
    assert value(found, "http_request_errors_total", **labels) >= 2


async def test_cache_and_rate_limit_metrics_are_published(client: httpx.AsyncClient) -> None:
    page = (await client.get("http://conduit.test/metrics")).text
    for name in (
        "conduit_cache_hits_total",
        "conduit_cache_misses_total",
        "conduit_rate_limit_rejections_total",
    ):
        assert f"# TYPE {name} counter" in page


async def test_pool_usage_is_published(settings: Settings) -> None:
    app = create_app(settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 2}))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            pool = {"pool": "primary"}
            engine = app.state.engine
            async with engine.connect(), engine.connect():
                found = await scrape_at(client)
                assert value(found, "conduit_db_pool_size", **pool) == 1
                assert value(found, "conduit_db_pool_checked_out", **pool) == 2
                assert value(found, "conduit_db_pool_overflow", **pool) == 1
            found = await scrape_at(client)
            assert value(found, "conduit_db_pool_checked_out", **pool) == 0
            assert value(found, "conduit_db_pool_overflow", **pool) == 0


async def scrape_at(
    client: httpx.AsyncClient,
) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return samples((await client.get("/metrics")).text)


async def test_traces_cover_http_and_sql_and_reach_the_logs(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, logs: ReadLogs
) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "create_span_exporter", lambda _: exporter)
    traced = settings.model_copy(
        update={"otel_exporter_otlp_endpoint": "http://collector.invalid:4318"}
    )
    app = create_app(traced)
    username = unique_name("traced")
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            response = await client.get(f"/profiles/{username}")
            assert response.status_code == 404
            assert (await client.get("http://t/health/ready")).status_code == 200
    spans = exporter.get_finished_spans()

    [server] = [span for span in spans if span.kind is SpanKind.SERVER]
    assert server.name == "GET /api/profiles/{username}"
    assert server.attributes is not None
    assert server.attributes["http.route"] == "/api/profiles/{username}"
    assert server.attributes["http.response.status_code"] == 404
    sql = [span for span in spans if span.kind is SpanKind.CLIENT]
    assert sql
    assert all(span_trace(span) == span_trace(server) for span in sql)
    statements = [str((span.attributes or {}).get("db.statement", "")) for span in sql]
    assert any(statement.startswith("SELECT") for statement in statements)
    assert "SELECT 1" not in statements

    [access] = [
        line for line in access_lines(logs()) if line.get("route") == "/api/profiles/{username}"
    ]
    assert access["trace_id"] == format(span_trace(server), "032x")


async def test_traces_cover_redis_commands(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, redis_server_url: str
) -> None:
    exporter = InMemorySpanExporter()
    monkeypatch.setattr(tracing, "create_span_exporter", lambda _: exporter)
    traced = on_redis(
        settings, redis_server_url, otel_exporter_otlp_endpoint="http://collector.invalid:4318"
    )
    app = create_app(traced)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t/api") as client:
            assert (await client.get("/tags")).status_code == 200
    spans = exporter.get_finished_spans()
    [server] = [span for span in spans if span.kind is SpanKind.SERVER]
    redis_spans = [span for span in spans if (span.attributes or {}).get("db.system") == "redis"]
    assert redis_spans
    assert all(span_trace(span) == span_trace(server) for span in redis_spans)


def span_trace(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


async def test_without_an_endpoint_nothing_is_traced(
    client: httpx.AsyncClient, app: FastAPI, logs: ReadLogs
) -> None:
    assert app.state.tracer_provider is None
    await client.get("/tags")
    [line] = access_lines(logs())
    assert "trace_id" not in line


def test_the_servers_own_lines_follow_the_log_level(server_url: str, tmp_path: Path) -> None:
    with serving(server_url, tmp_path, env={"LOG_LEVEL": "WARNING"}) as server:
        assert httpx.get(f"{server.url}/api/tags").status_code == 200
    lines = [json.loads(line) for line in server.log_lines()]
    assert {line["level"] for line in lines} <= {"warning", "error", "critical"}, lines


def test_metrics_add_up_over_worker_processes(
    server_url: str, redis_server_url: str, tmp_path: Path
) -> None:
    env = {"REDIS_URL": redis_server_url, "REDIS_KEY_PREFIX": f"conduit-test-{uuid.uuid4().hex}:"}
    with serving(server_url, tmp_path, "--workers", "2", env=env) as server:
        for _ in range(6):
            assert httpx.get(f"{server.url}/api/tags").status_code == 200
        # Whichever process answers a scrape reports the sum over both.
        for _ in range(4):
            found = samples(httpx.get(f"{server.url}/metrics").text)
            tags = {"handler": "/api/tags", "method": "GET", "status": "200"}
            assert value(found, "http_requests_total", **tags) == 6
            assert value(found, "conduit_db_pool_size", pool="primary") > 0


@pytest.mark.anyio
async def test_route_templates_are_resolved_once_per_path_within_a_bound(app: FastAPI) -> None:
    def scope(method: str, path: str) -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "root_path": "", "app": app}

    routes = RouteTemplates(max_entries=2)
    assert routes.of(scope("GET", "/api/articles/a-slug")) == "/api/articles/{slug}"
    assert routes.of(scope("GET", "/api/articles/a-slug")) == "/api/articles/{slug}"
    assert routes.of(scope("GET", "/api/articles/feed")) == "/api/articles/feed"
    assert routes.of(scope("GET", "/nothing/here")) is None
    assert routes.of(scope("PATCH", "/api/tags")) == "/api/tags"
    assert len(routes._known) <= 2


@pytest.mark.anyio
async def test_route_templates_are_resolved_once_per_route_and_prefix(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    router = APIRouter()

    @router.get("/items/{name}")
    async def item(name: str) -> dict[str, str]:
        return {"name": name}

    app = FastAPI()
    app.include_router(router, prefix="/one")
    app.include_router(router, prefix="/two")
    walked: list[str] = []
    get_route_name = middleware.get_route_name

    def walking(request: Any, should_include_root_path: bool) -> str | None:
        walked.append(request.scope["path"])
        return get_route_name(request, should_include_root_path=should_include_root_path)

    monkeypatch.setattr(middleware, "get_route_name", walking)
    paths = ["/one/items/a", "/one/items/b", "/two/items/c", "/two/items/d", "/one/items/e"]
    routes = RouteTemplates()
    resolved: list[str | None] = []

    async def resolving(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        resolved.append(routes.of(scope))

    transport = httpx.ASGITransport(app=resolving)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        for path in paths:
            assert (await client.get(path)).status_code == 200
    assert resolved == [
        "/one/items/{name}",
        "/one/items/{name}",
        "/two/items/{name}",
        "/two/items/{name}",
        "/one/items/{name}",
    ]
    # Later paths of a route already resolved under the same prefix walk no routes.
    assert walked[0] == "/one/items/a"
    assert "/one/items/b" not in walked
    assert "/one/items/e" not in walked

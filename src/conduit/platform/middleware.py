"""Small ASGI middleware around the routes: path normalisation, content type, body size,
security headers, the access log and HTTP metrics, the in-flight gauge, last-resort errors."""

import base64
import hashlib
import logging
import re
import time
import uuid
from collections.abc import Collection

from prometheus_fastapi_instrumentator.routing import get_route_name
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conduit.platform.errors import error_body
from conduit.platform.observability import metrics
from conduit.platform.observability.logging import (
    get_logger,
    json_line_writer,
    request_log_context,
)

logger = logging.getLogger(__name__)
ACCESS_LOGGER = "conduit.access"
access_log = get_logger(ACCESS_LOGGER)


class StripTrailingSlash:
    """Route `/api/articles/` like `/api/articles`.

    Front ends differ on trailing slashes, and a redirect would drop the body of a POST in some
    clients and fail a CORS preflight in browsers, so the path is rewritten in place.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                stripped = path.rstrip("/") or "/"
                scope = {**scope, "path": stripped, "raw_path": stripped.encode()}
        await self.app(scope, receive, send)


class RequireJsonBody:
    """Answer 415 to a request that carries a body in anything but JSON.

    Without it, a form-encoded or text body reaches validation and gets a misleading 422.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not _json_or_empty(Headers(scope=scope)):
            response = JSONResponse(
                error_body({"Content-Type": ["must be application/json"]}), status_code=415
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _json_or_empty(headers: Headers) -> bool:
    has_body = headers.get("content-length", "0") not in {"", "0"} or "transfer-encoding" in headers
    if not has_body:
        return True
    media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (
        media_type.startswith("application/") and media_type.endswith("+json")
    )


class TrackedSend:
    """An ASGI `send` that remembers whether the response has started: after that, an error
    can no longer be answered with a response of its own."""

    def __init__(self, send: Send) -> None:
        self.send = send
        self.response_started = False

    async def __call__(self, message: Message) -> None:
        self.response_started = self.response_started or message["type"] == "http.response.start"
        await self.send(message)


class RenderUnexpectedErrors:
    """Turn an unhandled exception into a logged 500 in the RealWorld error shape.

    It sits inside the CORS middleware, so browsers can read the error; Starlette's own
    last-resort handler sits outside it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        tracked_send = TrackedSend(send)
        try:
            await self.app(scope, receive, tracked_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if tracked_send.response_started:
                raise
            response = JSONResponse(error_body({"body": ["internal server error"]}), 500)
            await response(scope, receive, send)


class LimitBodySize:
    """Answer 413 to a request body over `max_bytes`: at once when Content-Length says so,
    otherwise as soon as the streamed body passes the limit.

    FastAPI's own `max_body_size` answers the first case in plain text; this keeps the
    RealWorld error shape for both.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(Headers(scope=scope))
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        received = 0
        tracked_send = TrackedSend(send)

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge(self.max_bytes)
            return message

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLarge:
            # Raised where no exception handler runs, such as a middleware reading the body.
            if tracked_send.response_started:
                raise
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(error_body({"body": [_too_large(self.max_bytes)]}), 413)
        await response(scope, receive, send)


class BodyTooLarge(HTTPException):
    """Raised from `receive`; an HTTPException, so FastAPI renders it rather than calling the
    body unparsable."""

    def __init__(self, max_bytes: int) -> None:
        super().__init__(status_code=413, detail=_too_large(max_bytes))


def _too_large(max_bytes: int) -> str:
    return f"is too large (maximum is {max_bytes} bytes)"


def _content_length(headers: Headers) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


API_CONTENT_SECURITY_POLICY = "default-src 'none'; frame-ancestors 'none'"
HSTS = "max-age=31536000"
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def page_content_security_policy(html: bytes) -> str:
    """The policy for the documentation pages: Swagger UI and ReDoc from their CDN, and only
    the inline scripts of this very page, by hash."""
    hashes = " ".join(
        f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(html)
    )
    return "; ".join(
        [
            "default-src 'none'",
            f"script-src 'self' https://cdn.jsdelivr.net {hashes}".rstrip(),
            # Swagger UI sets style attributes from its scripts; those cannot be hashed.
            "style-src 'self' https://cdn.jsdelivr.net https://fonts.googleapis.com "
            "'unsafe-inline'",
            "img-src 'self' data: https://fastapi.tiangolo.com https://cdn.redoc.ly",
            "font-src https://fonts.gstatic.com",
            "connect-src 'self'",
            "worker-src blob:",
            "frame-ancestors 'none'",
            "base-uri 'none'",
            "form-action 'none'",
        ]
    )


class SecurityHeaders:
    """Headers that tell browsers how to treat every response.

    `nosniff` and `no-referrer` everywhere; a Content-Security-Policy that allows nothing on
    the API's JSON and what the documentation pages in `page_paths` need on them; HSTS only on
    a request that arrived over TLS, as a browser ignores it otherwise and a plain-HTTP
    development server must not pin itself to HTTPS.
    """

    def __init__(self, app: ASGIApp, *, page_paths: Collection[str] = ()) -> None:
        self.app = app
        self.page_paths = frozenset(page_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        over_tls = scope.get("scheme") == "https"
        if scope["path"] in self.page_paths:
            await self._page(scope, receive, send, over_tls=over_tls)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                _add_headers(message, API_CONTENT_SECURITY_POLICY, over_tls=over_tls)
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _page(self, scope: Scope, receive: Receive, send: Send, *, over_tls: bool) -> None:
        # The policy names the page's inline scripts, so it waits for the (small) page.
        start: Message | None = None
        body = bytearray()

        async def buffered_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False):
                return
            _add_headers(start, page_content_security_policy(bytes(body)), over_tls=over_tls)
            await send(start)
            await send({"type": "http.response.body", "body": bytes(body)})

        await self.app(scope, receive, buffered_send)


def _add_headers(start: Message, content_security_policy: str, *, over_tls: bool) -> None:
    headers = MutableHeaders(scope=start)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("Referrer-Policy", "no-referrer")
    headers.setdefault("Content-Security-Policy", content_security_policy)
    if over_tls:
        headers.setdefault("Strict-Transport-Security", HSTS)


class CountInFlight:
    """Keep the `http_requests_in_flight` gauge."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics.HTTP_REQUESTS_IN_FLIGHT.inc()
        try:
            await self.app(scope, receive, send)
        finally:
            metrics.HTTP_REQUESTS_IN_FLIGHT.dec()


# The route template of a request answered without routing, set by whoever answered it (the
# cached reads), so that the access log and metrics need not look it up.
ROUTE_TEMPLATE_KEY = "conduit.route_template"


class RouteTemplates:
    """The route template each request resolves to (`/api/articles/{slug}`), remembered.

    Resolving walks every route in turn: 25 to 80 µs, a quarter of a cached read, a per cent or
    two of a write. The routes do not change once the app serves, so each is resolved once: a
    routed request names its route (`scope["route"]`), whose template is then looked up once per
    route rather than once per path: every slug is a new path. A route included under two
    prefixes is the same object for both, so its remembered template is used only for a path
    it renders to. Other requests (no route, or a path that template does not render to) are
    remembered per path, and since distinct paths are unbounded that memory is emptied when it
    reaches `max_entries`.
    """

    def __init__(self, max_entries: int = 10_000) -> None:
        self.max_entries = max_entries
        self._known: dict[tuple[str, str, str], str | None] = {}
        # By id: routes compare by value and are unhashable. Each entry keeps its route alive,
        # so that its id cannot be another's.
        self._by_route: dict[int, tuple[object, str]] = {}

    def of(self, scope: Scope) -> str | None:
        answered: str | None = scope.get(ROUTE_TEMPLATE_KEY)
        if answered is not None:
            return answered
        route = scope.get("route")
        if route is not None:
            remembered = self._by_route.get(id(route))
            if remembered is not None and _renders(remembered[1], scope):
                return remembered[1]
        key = (scope["method"], scope.get("root_path", ""), scope["path"])
        try:
            return self._known[key]
        except KeyError:
            pass
        template = get_route_name(Request(scope), should_include_root_path=False)
        if len(self._known) >= self.max_entries:
            self._known.clear()
        self._known[key] = template
        if route is not None and template is not None and _renders(template, scope):
            self._by_route.setdefault(id(route), (route, template))
        return template


def _renders(template: str, scope: Scope) -> bool:
    """Whether `template` with the request's path parameters is the request's path."""
    try:
        rendered = template.format_map(scope.get("path_params", {}))
    except (KeyError, IndexError, ValueError):
        return False
    path: str = scope["path"]
    return rendered == path or rendered == path.removeprefix(scope.get("root_path", ""))


class RecordRequests:
    """Write one `request` line per HTTP request (method, path, route template, status and
    duration, plus what the log context adds: request id, trace id, user id) and count it in
    the HTTP metrics under its route template (`none` for a path no route serves).

    Probes and scrapes (`/health/...`, `/metrics`) are logged at DEBUG, so that they do not
    bury the traffic at the default level, and left out of the metrics, which would otherwise
    count mostly them.
    """

    def __init__(self, app: ASGIApp, *, quiet_prefixes: tuple[str, ...] = ("/health/", "/metrics")):
        self.app = app
        self.quiet_prefixes = quiet_prefixes
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        with request_log_context():
            try:
                await self.app(scope, receive, recording_send)
            finally:
                self._record(scope, status, time.perf_counter() - started)

    def _record(self, scope: Scope, status: int, seconds: float) -> None:
        route = self.routes.of(scope)
        path: str = scope["path"]
        if path.startswith(self.quiet_prefixes):
            level = logging.DEBUG
        else:
            level = logging.INFO
            metrics.record_request(scope["method"], route or "none", str(status), seconds)
        if logging.getLogger(ACCESS_LOGGER).isEnabledFor(level):
            log_request(scope, status, seconds, route=route, level=level)


def log_request(
    scope: Scope, status: int, seconds: float, *, route: str | None, level: int = logging.INFO
) -> None:
    """Write the access line of one answered request (see `RecordRequests`)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not logger.isEnabledFor(level):
        return
    client = scope.get("client")
    fields = {
        "method": scope["method"],
        "path": scope["path"],
        "route": route,
        "status": status,
        "duration_ms": round(seconds * 1000, 2),
        "client": client[0] if client else None,
    }
    writer = json_line_writer(logger)
    if writer is None:
        access_log.log(level, "request", **fields)
    else:
        writer.write(level, "request", **fields)


REQUEST_ID_HEADER = "X-Request-ID"


def new_request_id() -> str:
    """The id of a request that came without one."""
    return uuid.uuid4().hex


# What proxies and clients use as request ids (UUIDs, hex, ULIDs, AWS trace ids), and nothing
# that could break a log line or a header.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+=/-]{1,128}")


def is_valid_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None

"""Small ASGI middleware around the routes: path normalisation, content type, last-resort errors."""

import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conduit.platform.errors import error_body

logger = logging.getLogger(__name__)


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
        response_started = False

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            logger.exception("unhandled error on %s %s", scope["method"], scope["path"])
            if response_started:
                raise
            response = JSONResponse(error_body({"body": ["internal server error"]}), 500)
            await response(scope, receive, send)

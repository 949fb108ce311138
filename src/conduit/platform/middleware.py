"""Small ASGI middleware that shape every request before routing."""

from starlette.types import ASGIApp, Receive, Scope, Send


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

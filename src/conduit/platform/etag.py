"""HTTP validators for API reads: an `ETag` on every successful JSON `GET` under `/api`, and
`304 Not Modified` when the request's `If-None-Match` names it.

The tag is strong: a digest of the exact body sent, so it changes whenever any byte does,
including the caller's own `favorited` and `following` flags. `If-None-Match` is compared
weakly, as HTTP prescribes for it, so `W/"<tag>"` matches too, and `*` matches any body.
Responses say `Cache-Control: no-cache` (store, but revalidate before each use) and
`Vary: Authorization`, since the same URL answers each caller differently.
"""

import hashlib

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

API_PREFIX = "/api/"
# Kept on a 304 as RFC 9110 asks; the body's own headers go.
_DROPPED_ON_304 = ("content-length", "content-type")


def entity_tag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def matches(if_none_match: str, tag: str) -> bool:
    candidates = [candidate.strip() for candidate in if_none_match.split(",")]
    return "*" in candidates or tag in (candidate.removeprefix("W/") for candidate in candidates)


class ETags:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] != "http"
            or scope["method"] != "GET"
            or not scope["path"].startswith(API_PREFIX)
        ):
            await self.app(scope, receive, send)
            return
        if_none_match = Headers(scope=scope).get("if-none-match")
        start: Message | None = None
        chunks: list[bytes] = []

        async def buffering_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                media_type = Headers(raw=message["headers"]).get("content-type", "")
                if message["status"] == 200 and media_type.startswith("application/json"):
                    start = message
                    return
            elif start is not None and message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    await _send_validated(send, start, b"".join(chunks), if_none_match)
                return
            await send(message)

        await self.app(scope, receive, buffering_send)


async def send_json_validated(send: Send, body: bytes, tag: str, if_none_match: str | None) -> int:
    """Send a `200` JSON `body` whose tag is `tag` as `ETags` would; the status sent."""
    start: Message = {
        "type": "http.response.start",
        "status": 200,
        "headers": [
            (b"content-length", str(len(body)).encode()),
            (b"content-type", b"application/json"),
        ],
    }
    return await _send_validated(send, start, body, if_none_match, tag=tag)


async def _send_validated(
    send: Send, start: Message, body: bytes, if_none_match: str | None, *, tag: str | None = None
) -> int:
    tag = tag or entity_tag(body)
    headers = MutableHeaders(scope=start)
    headers["ETag"] = tag
    headers.setdefault("Cache-Control", "no-cache")
    headers.add_vary_header("Authorization")
    if if_none_match is not None and matches(if_none_match, tag):
        for name in _DROPPED_ON_304:
            del headers[name]
        await send({**start, "status": 304})
        await send({"type": "http.response.body", "body": b""})
        return 304
    await send(start)
    await send({"type": "http.response.body", "body": body})
    return int(start["status"])

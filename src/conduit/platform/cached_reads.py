"""Anonymous reads answered from the cache before routing.

A `GET` without credentials whose answer is a fresh cache entry needs none of the router's work:
no route matching, no dependencies, no database session. This layer finds the entry at the
address the route itself would read (the same function builds it) and sends it. Anything else
goes on to the router unchanged, which answers, validates and fills the cache as always: a miss
or a stale entry, an `Authorization` header (valid or not), a parameter this layer does not
know, or a value it cannot be sure the route would accept.

It sits inside every middleware, so a response from here is logged, measured, tagged and given
its headers like any other. The caller's rate limit is taken here, once per request: the
route's own check sees it was done.
"""

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from conduit.platform.cache import Cache, CacheAddress
from conduit.platform.errors import ConduitError, error_response
from conduit.platform.rate_limit import Limiter
from conduit.platform.schemas import ensure_storable_text
from conduit.platform.settings import Settings

# The address of a request's entry from its path match and its query (each name once), or None
# when the route must answer.
Addresser = Callable[[re.Match[str], Mapping[str, str], Settings], CacheAddress | None]


@dataclass(frozen=True, slots=True)
class CachedRead:
    """A route whose anonymous answer is a cache entry.

    `path` (after the prefix) must match exactly the paths the route serves and none that an
    earlier route takes; `body` turns the entry into the response body without changing it
    (the in-process cache shares its objects).
    """

    path: re.Pattern[str]
    address: Addresser
    body: Callable[[Any], Any]


class AnonymousCachedReads:
    """Serve `reads` (paths under `prefix`) from the cache when it can; see the module."""

    def __init__(self, app: ASGIApp, *, prefix: str, reads: Sequence[CachedRead]) -> None:
        self.app = app
        self.prefix = prefix
        self.reads = tuple(reads)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._find(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        read, address = found
        request = Request(scope)
        limiter: Limiter = request.app.state.limiter
        try:
            await limiter.enforce(request)
        except ConduitError as error:
            await error_response(error)(scope, receive, send)
            return
        cache: Cache = request.app.state.cache
        entry = await cache.peek(address)
        if entry is None:
            await self.app(scope, receive, send)
            return
        await JSONResponse(read.body(entry))(scope, receive, send)

    def _find(self, scope: Scope) -> tuple[CachedRead, CacheAddress] | None:
        path: str = scope["path"]
        if not path.startswith(self.prefix):
            return None
        path = path[len(self.prefix) :]
        for read in self.reads:
            match = read.path.fullmatch(path)
            if match is not None:
                break
        else:
            return None
        if any(name == b"authorization" for name, _ in scope["headers"]):
            return None
        query = _single_valued(QueryParams(scope["query_string"]))
        if query is None:
            return None
        settings: Settings = scope["app"].state.settings
        address = read.address(match, query, settings)
        return None if address is None else (read, address)


def _single_valued(params: QueryParams) -> dict[str, str] | None:
    """The query as a plain mapping, or None when a name repeats (the route decides which
    value counts)."""
    items = params.multi_items()
    query = dict(items)
    return query if len(query) == len(items) else None


def storable_text(value: str, *, max_length: int = 255) -> bool:
    """Whether the routes' `Text` parameters accept `value` unchanged."""
    if len(value) > max_length:
        return False
    try:
        ensure_storable_text(value)
    except ValueError:
        return False
    return True


def by_path_text(parameter: str, address: Callable[[str], CacheAddress]) -> Addresser:
    """The addresser of a read named by one text path parameter (a slug, a username)."""

    def address_of(match: re.Match[str], _: Mapping[str, str], __: Settings) -> CacheAddress | None:
        value = match[parameter]
        return address(value) if storable_text(value) else None

    return address_of


def bounded_int(value: str, *, minimum: int, maximum: int) -> int | None:
    """`value` as the routes' integer parameters read it, when it is plain digits in range."""
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    return number if minimum <= number <= maximum else None

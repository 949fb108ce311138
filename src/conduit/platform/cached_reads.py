"""Anonymous reads answered from the cache before routing.

A `GET` without credentials or body whose answer is a fresh cache entry needs none of the
router's work: no route matching, no dependencies, no database session, and none of the
middleware that only routed requests need. This layer finds the entry at the address the route
itself would read (the same function builds it), renders it, and keeps the rendered body and
its tag as a local copy (see `platform.local_copies`), which answers the same request next time
without asking Redis. Anything else goes on to the router unchanged, which answers, validates
and fills the cache as always: a miss or a stale entry (but while another request rebuilds a
stale one, which is answered as it was: see `Cache.peek_or_stale`; such an answer is not kept
as a local copy), an `Authorization` header (valid or not), a body, a parameter this layer
does not know, or a value it cannot be sure the route would accept.

It sits outside the app's middleware and sends what it answers through the `envelope` it is
given: the same middleware every response passes (request id, security headers, access log,
in-flight gauge, CORS, rate-limit headers), so its answers cannot be told from the routes' but
by their speed (the envelope's access log counts them in the HTTP metrics under the route's
template). It takes the caller's rate limit and answers `If-None-Match` as `ETags` does.

With no limits to take, the envelope sends the same headers for every answer of a local copy
but the request id, unless the request carries what some middleware of it answers (its own
request id, an `Origin`, an `If-None-Match`). For such requests the headers the envelope sent
are kept with the copy and replayed with a new request id, and this layer does the rest of the
envelope's work itself: the in-flight gauge, the metrics and the access line. Passing through
the envelope cost more than everything else in a cached read.
"""

import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from asgi_correlation_id.context import correlation_id
from starlette.datastructures import Headers, QueryParams
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conduit.platform.cache import Cache, CacheAddress
from conduit.platform.errors import ConduitError, error_response
from conduit.platform.etag import entity_tag, send_json_validated
from conduit.platform.local_copies import Snapshot
from conduit.platform.middleware import (
    REQUEST_ID_HEADER,
    ROUTE_TEMPLATE_KEY,
    log_request,
    new_request_id,
)
from conduit.platform.observability import metrics
from conduit.platform.observability.metrics import CACHE_HITS
from conduit.platform.rate_limit import Limiter
from conduit.platform.schemas import ensure_storable_text
from conduit.platform.settings import Settings


class ReadAddress(Protocol):
    """Where a read's answer comes from: a cache address, or what a `Peeker` knows how to read.
    Its key and generations are those of the local copy of the answer."""

    @property
    def name(self) -> str: ...

    @property
    def key(self) -> str: ...

    @property
    def generations(self) -> tuple[str, ...]: ...


# The address of a request's answer from its path match and its query (each name once), or None
# when the route must answer. Once it gives an address for a path and query, it must give the
# same one for them ever after (it may give None first: a search it cannot read yet).
Addresser = Callable[[re.Match[str], Mapping[str, str], Settings], ReadAddress | None]


@dataclass(frozen=True, slots=True)
class Peeked:
    """What a read found in the cache, the generations it was built on (those of its address
    first), and their change counts from before it was read."""

    value: Any
    generations: tuple[str, ...]
    snapshot: Snapshot
    # Made stale by a write, and answered while another request rebuilds it: never kept as a
    # local copy, which would outlive the rebuild.
    stale: bool = False


Peeker = Callable[[Cache, Any], Awaitable[Peeked | None]]


async def peek_entry(cache: Cache, address: CacheAddress) -> Peeked | None:
    """The entry at `address` if fresh, or as it was while another request rebuilds it; else
    None. The answer of most reads."""
    snapshot = cache.changes.copies.snapshot(address.generations)
    found = await cache.peek_or_stale(address)
    if found is None:
        return None
    return Peeked(found.value, address.generations, snapshot, stale=found.stale)


@dataclass(frozen=True, slots=True)
class CachedRead:
    """A route whose anonymous answer is in the cache.

    `path` (after the prefix) must match exactly the paths the route serves and none that an
    earlier route takes; `route` is its template (after the prefix), as metrics name it;
    `body` turns what `peek` found into the response body without changing it (the in-process
    cache shares its objects). `peek` reads the address's entry (`peek_entry`); a read assembled
    from several entries brings its own, which must find all of them or None.
    """

    path: re.Pattern[str]
    route: str
    address: Addresser
    body: Callable[[Any], Any]
    peek: Peeker = peek_entry


@dataclass(frozen=True, slots=True)
class _Answer:
    read: CachedRead
    body: bytes
    tag: str


_ANSWER = "conduit.cached_read"
# Paths and queries whose address is known: reading a list page's query and building its
# address was a third of the work of answering it from a local copy.
MAX_KNOWN_ADDRESSES = 10_000
_Headers = tuple[tuple[bytes, bytes], ...]
_REQUEST_ID = REQUEST_ID_HEADER.lower().encode()
# The caller's own request id, CORS and a conditional request change what the envelope sends.
_ANSWERED_HEADERS = frozenset({_REQUEST_ID, b"origin", b"if-none-match"})


class AnonymousCachedReads:
    """Serve `reads` (paths under `prefix`) from the cache when it can; see the module."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        prefix: str,
        reads: Sequence[CachedRead],
        envelope: Callable[[ASGIApp], ASGIApp],
    ) -> None:
        self.app = app
        self.prefix = prefix
        self.reads = tuple(reads)
        self._answer_in_envelope = envelope(self._answer)
        self._addresses: dict[tuple[str, bytes], tuple[CachedRead, ReadAddress]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        found = self._find(scope) if scope["type"] == "http" and scope["method"] == "GET" else None
        if found is None:
            await self.app(scope, receive, send)
            return
        read, address = found
        cache: Cache = scope["app"].state.cache
        copies = cache.changes.copies
        copy = copies.get(address.key, address.generations) if cache.enabled else None
        if copy is not None:
            CACHE_HITS.labels(address.name).inc()
            if self._replayable(scope):
                sent = copy.sent_headers.get(scope["scheme"])
                if sent is not None:
                    await self._replay(scope, send, read, copy.body, sent)
                    return
                send = _recording_headers(send, copy.sent_headers, scope["scheme"])
            answer = _Answer(read, copy.body, copy.tag)
        else:
            peeked = await read.peek(cache, address) if cache.enabled else None
            if peeked is None:
                await self.app(scope, receive, send)
                return
            body = bytes(JSONResponse(read.body(peeked.value)).body)
            answer = _Answer(read, body, entity_tag(body))
            if not peeked.stale:
                copies.keep(address.key, peeked.generations, peeked.snapshot, body, answer.tag)
        scope[_ANSWER] = answer
        scope[ROUTE_TEMPLATE_KEY] = self.prefix + read.route
        await self._answer_in_envelope(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, send: Send) -> None:
        answer: _Answer = scope[_ANSWER]
        request = Request(scope)
        limiter: Limiter = request.app.state.limiter
        try:
            await limiter.enforce(request)
        except ConduitError as error:
            await error_response(error)(scope, receive, send)
        else:
            if_none_match = Headers(scope=scope).get("if-none-match")
            await send_json_validated(send, answer.body, answer.tag, if_none_match)

    def _replayable(self, scope: Scope) -> bool:
        """Whether the envelope would send what it sent for the copy before: with no limits to
        take, and none of the request headers some middleware of it answers."""
        limiter: Limiter = scope["app"].state.limiter
        return not limiter.enabled and not any(
            name in _ANSWERED_HEADERS for name, _ in scope["headers"]
        )

    async def _replay(
        self, scope: Scope, send: Send, read: CachedRead, body: bytes, sent: _Headers
    ) -> None:
        """Send a copy's answer with the headers it got before, and do what the envelope and
        `_answer` do around it: a new request id, the in-flight gauge, metrics, the access line."""
        started = time.perf_counter()
        request_id = new_request_id()
        token = correlation_id.set(request_id)
        metrics.HTTP_REQUESTS_IN_FLIGHT.inc()
        status = 500
        try:
            headers = [*sent, (_REQUEST_ID, request_id.encode())]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            status = 200
            await send({"type": "http.response.body", "body": body})
        finally:
            metrics.HTTP_REQUESTS_IN_FLIGHT.dec()
            seconds = time.perf_counter() - started
            route = self.prefix + read.route
            metrics.record_request("GET", route, str(status), seconds)
            log_request(scope, status, seconds, route=route)
            correlation_id.reset(token)

    def _find(self, scope: Scope) -> tuple[CachedRead, ReadAddress] | None:
        for name, value in scope["headers"]:
            # The routed answer to a body is a 413 or 415 from the middleware here skipped.
            if name == b"authorization" or name == b"transfer-encoding":
                return None
            if name == b"content-length" and value != b"0":
                return None
        path: str = scope["path"]
        raw_query: bytes = scope["query_string"]
        found = self._addresses.get((path, raw_query))
        if found is None:
            found = self._address(scope["app"].state.settings, path, raw_query)
            if found is not None:
                if len(self._addresses) >= MAX_KNOWN_ADDRESSES:
                    self._addresses.clear()
                self._addresses[path, raw_query] = found
        return found

    def _address(
        self, settings: Settings, path: str, raw_query: bytes
    ) -> tuple[CachedRead, ReadAddress] | None:
        if not path.startswith(self.prefix):
            return None
        path = path[len(self.prefix) :]
        for read in self.reads:
            match = read.path.fullmatch(path)
            if match is not None:
                break
        else:
            return None
        query = _single_valued(QueryParams(raw_query)) if raw_query else {}
        if query is None:
            return None
        address = read.address(match, query, settings)
        return None if address is None else (read, address)


def _recording_headers(send: Send, into: dict[str, _Headers], scheme: str) -> Send:
    """`send`, keeping the headers of a `200` in `into[scheme]`, less the request id."""

    async def recording_send(message: Message) -> None:
        if message["type"] == "http.response.start" and message["status"] == 200:
            into[scheme] = tuple(
                (bytes(name), bytes(value))
                for name, value in message["headers"]
                if bytes(name).lower() != _REQUEST_ID
            )
        await send(message)

    return recording_send


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

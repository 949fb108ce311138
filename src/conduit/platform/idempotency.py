"""`Idempotency-Key` on creating POSTs, kept in the cache backend (memory or Redis).

A client that did not get an answer may retry a POST with the same key: if the first attempt
was committed, the retry gets its response again (same status and body, plus
`Idempotent-Replayed: true`) instead of creating a duplicate. Keys belong to the signed-in user
and last IDEMPOTENCY_TTL_SECONDS. The same key with another request (different method, path or
JSON body) is 422; a retry while the first attempt is still running is 409. If the key store is
down, a request carrying a key is refused with 503 rather than run without the guarantee.
A request that fails (any error response) forgets its key, so it can be corrected and retried.
"""

import hashlib
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Final, cast

from fastapi import Depends, FastAPI, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.cache import Cache, CacheUnavailable
from conduit.platform.db.session import after_commit
from conduit.platform.errors import ConduitError, ValidationFailed
from conduit.platform.rate_limit import user_id_from_request

logger = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_MAX_LENGTH = 255
# Checked in code, not as a schema pattern: a pattern invites generated counter-examples
# (non-Latin-1 text) that no HTTP client can put in a header.
_VALID_KEY = re.compile(rf"[\x21-\x7e]{{1,{KEY_MAX_LENGTH}}}")
# A first attempt that has run this long without finishing is presumed dead and retryable.
IN_PROGRESS_SECONDS: Final = 60


class IdempotencyKeyReused(ValidationFailed):
    field = HEADER
    message = "was already used for a different request"


class IdempotencyKeyInUse(ConduitError):
    status_code = 409
    field = HEADER
    message = "is in use by a request still in progress; retry shortly"


class IdempotencyUnavailable(ConduitError):
    status_code = 503
    field = HEADER
    message = "cannot be honoured right now; retry shortly"


class IdempotentReplay(Exception):
    """Answer with the stored response of the first attempt."""

    def __init__(self, status_code: int, body: Any) -> None:
        super().__init__(status_code)
        self.status_code = status_code
        self.body = body


class IdempotencyStore:
    def __init__(self, cache: Cache, *, ttl_seconds: int) -> None:
        self.cache = cache
        self.ttl_seconds = ttl_seconds

    async def begin(self, record_key: str, fingerprint: str) -> None:
        """Claim `record_key` for this request, or raise what the caller must answer instead."""
        pending = {"state": "pending", "fingerprint": fingerprint}
        try:
            for _ in range(2):
                if await self.cache.add(record_key, pending, ttl_seconds=IN_PROGRESS_SECONDS):
                    return
                existing = await self.cache.get(record_key)
                if existing is None:
                    continue  # expired between the two calls
                if existing.get("fingerprint") != fingerprint:
                    raise IdempotencyKeyReused()
                if existing.get("state") != "done":
                    raise IdempotencyKeyInUse()
                raise IdempotentReplay(existing["status"], existing["body"])
        except CacheUnavailable as error:
            logger.warning("idempotency store unavailable: %s", error)
            raise IdempotencyUnavailable() from None
        raise IdempotencyKeyInUse()

    async def complete(
        self, record_key: str, fingerprint: str, status_code: int, body: Any
    ) -> None:
        done = {"state": "done", "fingerprint": fingerprint, "status": status_code, "body": body}
        try:
            await self.cache.set(record_key, done, ttl_seconds=self.ttl_seconds)
        except CacheUnavailable as error:
            logger.warning("could not store the response for an idempotency key: %s", error)

    async def release(self, record_key: str) -> None:
        try:
            await self.cache.delete(record_key)
        except CacheUnavailable as error:
            logger.warning("could not release an idempotency key: %s", error)


@dataclass(slots=True)
class IdempotentRequest:
    """The route's side of an idempotency key: `remember` the response it is returning."""

    store: IdempotencyStore | None = None
    record_key: str = ""
    fingerprint: str = ""
    completed: bool = False

    def remember(self, session: AsyncSession, response: BaseModel, *, status_code: int) -> None:
        """Store `response` for retries once the session's transaction has committed."""
        store = self.store
        if store is None:
            return
        body = response.model_dump(mode="json", by_alias=True)

        async def complete() -> None:
            await store.complete(self.record_key, self.fingerprint, status_code, body)
            self.completed = True

        after_commit(session, complete)


def _fingerprint(request: Request, body: bytes) -> str:
    try:
        canonical = json.dumps(
            json.loads(body), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256(f"{request.method} {request.url.path}\n".encode())
    digest.update(canonical)
    return digest.hexdigest()


async def idempotent_request(
    request: Request,
    key: Annotated[
        str | None,
        Header(
            alias=HEADER,
            description=(
                "A unique value (a UUID, say) that makes retrying this request safe: a retry "
                "with the same key and body returns the first response instead of creating a "
                "duplicate (with `Idempotent-Replayed: true`). The same key with a different "
                "body is 422; a retry while the first attempt is running is 409. Keys are "
                "per user and expire after IDEMPOTENCY_TTL_SECONDS (default 24 hours). "
                f"1 to {KEY_MAX_LENGTH} visible ASCII characters."
            ),
        ),
    ] = None,
) -> AsyncIterator[IdempotentRequest]:
    if key is not None and not _VALID_KEY.fullmatch(key):
        raise ValidationFailed(
            f"must be 1 to {KEY_MAX_LENGTH} visible ASCII characters", field=HEADER
        )
    user_id = user_id_from_request(request)
    if key is None or user_id is None:
        # Without a signed-in caller the route itself answers 401.
        yield IdempotentRequest()
        return
    store: IdempotencyStore = request.app.state.idempotency
    record_key = f"idempotency:{user_id}:{hashlib.sha256(key.encode()).hexdigest()}"
    handle = IdempotentRequest(store, record_key, _fingerprint(request, await request.body()))
    await store.begin(record_key, handle.fingerprint)
    try:
        yield handle
    finally:
        if not handle.completed:
            await store.release(record_key)


Idempotency = Annotated[IdempotentRequest, Depends(idempotent_request)]


async def _replay(_: Request, exc: Exception) -> JSONResponse:
    exc = cast(IdempotentReplay, exc)
    return JSONResponse(exc.body, status_code=exc.status_code, headers={REPLAYED_HEADER: "true"})


def install_idempotency(app: FastAPI) -> None:
    app.add_exception_handler(IdempotentReplay, _replay)

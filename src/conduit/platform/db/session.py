"""The request-scoped database session.

Routes never commit: `AutoCommitRoute` commits once after the endpoint returns, before the
response is sent, so a failed commit becomes an error response instead of a lost write. Any
exception rolls the session back, except a `ConduitError` with `keeps_changes`, which commits
first. A `GET` reads without a transaction and cannot write (`engine.READ_ONLY`).
"""

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from conduit.platform.errors import ConduitError

logger = logging.getLogger(__name__)


# The app's cache, which writes invalidate after commit (see `platform.cache`).
SESSION_CACHE_KEY = "conduit.cache"
_AFTER_COMMIT = "conduit.after_commit"


# Methods that never change anything (RFC 9110's "safe" methods): their requests only read.
SAFE_METHODS = frozenset({"GET", "HEAD"})


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's session: in a transaction that the route commits, or for a `GET` one
    that only reads, without a transaction (see `engine.create_read_sessionmaker`)."""
    state = request.app.state
    sessionmaker: async_sessionmaker[AsyncSession] = (
        state.read_sessionmaker if request.method in SAFE_METHODS else state.sessionmaker
    )
    async with sessionmaker() as session:
        session.info[SESSION_CACHE_KEY] = getattr(request.app.state, "cache", None)
        try:
            yield session
        except Exception:
            discard_after_commit(session)
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def release_connection(session: AsyncSession) -> None:
    """End a session's transaction that has only read, so that its connection goes back to
    the pool while the request waits on something slow that needs no database; what it loaded
    stays loaded, and its next statement begins a new transaction.

    Only before anything is written: a write pending here is refused rather than committed
    outside the route's single commit.
    """
    if not session.in_transaction():
        return
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("release_connection() on a session with pending writes")
    # Committing a transaction that wrote nothing is how SQLAlchemy ends it without
    # expiring what it loaded (a rollback would).
    await session.commit()


class AutoCommitRoute(APIRoute):
    """An APIRoute that commits the endpoint's session right after the endpoint returns."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if inspect.iscoroutinefunction(endpoint):
            endpoint = _commit_after(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _commit_after(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(endpoint)
    async def committing_endpoint(*args: Any, **kwargs: Any) -> Any:
        try:
            result = await endpoint(*args, **kwargs)
        except ConduitError as error:
            if error.keeps_changes:
                await _commit_sessions(kwargs)
            _discard_sessions_after_commit(kwargs)
            raise
        except BaseException:
            _discard_sessions_after_commit(kwargs)
            raise
        await _commit_sessions(kwargs)
        return result

    return committing_endpoint


async def _commit_sessions(kwargs: dict[str, Any]) -> None:
    for value in kwargs.values():
        if isinstance(value, AsyncSession):
            if value.in_transaction():
                await value.commit()
            await _run_after_commit(value)


def _discard_sessions_after_commit(kwargs: dict[str, Any]) -> None:
    for value in kwargs.values():
        if isinstance(value, AsyncSession):
            discard_after_commit(value)


class _AfterCommit:
    def __init__(
        self, callback: Callable[[], Awaitable[None]], on_discard: Callable[[], None] | None
    ) -> None:
        self.callback = callback
        self.on_discard = on_discard


def after_commit(
    session: AsyncSession,
    callback: Callable[[], Awaitable[None]],
    *,
    on_discard: Callable[[], None] | None = None,
) -> None:
    """Run `callback` once `AutoCommitRoute` has committed the session, before the response is
    sent; if the request fails instead, drop it (calling `on_discard`).

    SQLAlchemy's `after_commit` event would not do: its listeners are synchronous, so awaiting
    Redis there is impossible, and a task started from it could run after the response, when
    the client may already be reading its own write back.
    """
    session.info.setdefault(_AFTER_COMMIT, []).append(_AfterCommit(callback, on_discard))


async def commit(session: AsyncSession) -> None:
    """Commit, then run the session's after-commit hooks: for work outside a request."""
    try:
        await session.commit()
    except BaseException:
        discard_after_commit(session)
        raise
    await _run_after_commit(session)


async def _run_after_commit(session: AsyncSession) -> None:
    for hook in session.info.pop(_AFTER_COMMIT, []):
        try:
            await hook.callback()
        except Exception:
            # The write is committed; failing the response now would invite a duplicate retry.
            logger.exception("after-commit hook failed")


def discard_after_commit(session: AsyncSession) -> None:
    for hook in session.info.pop(_AFTER_COMMIT, []):
        if hook.on_discard is not None:
            hook.on_discard()

"""The request-scoped database session.

Routes never commit: `AutoCommitRoute` commits once after the endpoint returns, before the
response is sent, so a failed commit becomes an error response instead of a lost write. Any
exception rolls the session back.
"""

import functools
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    sessionmaker: async_sessionmaker[AsyncSession] = request.app.state.sessionmaker
    async with sessionmaker() as session:
        try:
            yield session
        except Exception:
            await session.rollback()
            raise


SessionDep = Annotated[AsyncSession, Depends(get_session)]


class AutoCommitRoute(APIRoute):
    """An APIRoute that commits the endpoint's session right after the endpoint returns."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        if inspect.iscoroutinefunction(endpoint):
            endpoint = _commit_after(endpoint)
        super().__init__(path, endpoint, **kwargs)


def _commit_after(endpoint: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    @functools.wraps(endpoint)
    async def committing_endpoint(*args: Any, **kwargs: Any) -> Any:
        result = await endpoint(*args, **kwargs)
        for value in kwargs.values():
            if isinstance(value, AsyncSession) and value.in_transaction():
                await value.commit()
        return result

    return committing_endpoint

"""Health endpoints for load balancers and orchestrators, outside `/api`.

- `/health/live`: the process answers. A failure means "restart me".
- `/health/ready`: the database answers, and Redis when one is configured. A failure means
  "send me no traffic for now"; the process stays up and recovers by itself.
- `/health/startup`: the database schema is at the migrations' head, so this version of the
  code can serve it.

A failure is 503 in the RealWorld error shape, naming each failed check:
`{"errors": {"database": ["is unreachable (ConnectionRefusedError)"]}}`.
"""

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from conduit.platform.db import migrations
from conduit.platform.errors import error_body
from conduit.platform.observability.tracing import untraced
from conduit.platform.settings import Settings

router = APIRouter(prefix="/health", tags=["operations"], include_in_schema=False)

OK = "ok"


class CheckFailed(Exception):
    """A dependency is not usable; the message completes "<check> ..." for the error body."""


async def _bounded(check: Awaitable[str], seconds: float) -> tuple[bool, str]:
    """(passed, detail): what the check reports, or why it failed."""
    try:
        async with asyncio.timeout(seconds):
            return True, await check
    except CheckFailed as failure:
        return False, str(failure)
    except TimeoutError:
        return False, f"did not answer within {seconds:g} s"
    except Exception as error:
        # The exception's class says enough to start looking; its message may hold a URL.
        return False, f"is unreachable ({type(error).__name__})"


async def _database(engine: AsyncEngine | None) -> str:
    if engine is None:
        raise CheckFailed("is not connected")
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
    return OK


async def _redis(client: Any) -> str:
    if client is None:
        raise CheckFailed("is not connected")
    await client.ping()
    return OK


async def _migrations(engine: AsyncEngine | None) -> str:
    if engine is None:
        raise CheckFailed("cannot be checked: the database is not connected")
    applied = await migrations.applied_revisions(engine)
    expected = migrations.head_revisions()
    if applied != expected:
        raise CheckFailed(
            f"are at {', '.join(sorted(applied)) or 'none'}, not at {', '.join(sorted(expected))}"
        )
    return ", ".join(sorted(applied))


async def _answer(request: Request, checks: dict[str, Awaitable[str]]) -> JSONResponse:
    settings: Settings = request.app.state.settings
    seconds = settings.health_check_timeout_seconds
    # Probes poll every few seconds; their queries would bury the traces worth reading.
    with untraced():
        results = await asyncio.gather(*(_bounded(check, seconds) for check in checks.values()))
    outcome = dict(zip(checks, results, strict=True))
    failed = {name: [detail] for name, (passed, detail) in outcome.items() if not passed}
    if failed:
        return JSONResponse(error_body(failed), status_code=503)
    return JSONResponse(
        {"status": OK, "checks": {name: detail for name, (_, detail) in outcome.items()}}
    )


@router.get("/live")
async def live() -> dict[str, str]:
    return {"status": OK}


@router.get("/ready")
async def ready(request: Request) -> JSONResponse:
    state = request.app.state
    checks: dict[str, Awaitable[str]] = {"database": _database(getattr(state, "engine", None))}
    settings: Settings = state.settings
    redis = getattr(state, "redis", None)
    if redis is not None or settings.redis_url is not None:
        checks["redis"] = _redis(redis)
    return await _answer(request, checks)


@router.get("/startup")
async def startup(request: Request) -> JSONResponse:
    engine = getattr(request.app.state, "engine", None)
    return await _answer(request, {"migrations": _migrations(engine)})

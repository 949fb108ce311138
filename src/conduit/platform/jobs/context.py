"""What a job handler is given: its transaction, and the long-lived clients of the process
that runs it (the server, for the in-process worker, or `conduit worker`)."""

from __future__ import annotations

from dataclasses import dataclass

import httpx
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.cache import Cache
from conduit.platform.live import LiveChannel
from conduit.platform.settings import Settings


@dataclass
class Resources:
    settings: Settings
    http: httpx.AsyncClient
    cache: Cache
    redis: Redis | None
    live: LiveChannel


@dataclass
class JobContext:
    resources: Resources
    # The handler's transaction: committed when the handler returns, rolled back if it raises.
    session: AsyncSession
    job_id: int
    # 1 on the first run.
    attempt: int
    # True on the last attempt the job type allows: a failure now makes it a dead letter.
    last_attempt: bool

    @property
    def settings(self) -> Settings:
        return self.resources.settings

"""What the worker can run: jobs by name, the jobs subscribed to each event type, and the
periodic jobs. Modules register theirs at import (see `conduit.background`)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy import ColumnElement

    from conduit.platform.jobs.context import JobContext

JsonObject = dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A fact about a change, recorded in the transaction that made it."""

    id: uuid.UUID
    type: str
    occurred_at: datetime
    data: JsonObject

    def to_json(self) -> JsonObject:
        return {
            "id": str(self.id),
            "type": self.type,
            "occurredAt": self.occurred_at.isoformat(),
            "data": self.data,
        }

    @classmethod
    def from_json(cls, value: JsonObject) -> Event:
        return cls(
            id=uuid.UUID(value["id"]),
            type=value["type"],
            occurred_at=datetime.fromisoformat(value["occurredAt"]),
            data=value["data"],
        )


JobHandler = Callable[["JobContext", JsonObject], Awaitable[None]]
EventHandler = Callable[["JobContext", Event], Awaitable[None]]
PeriodicHandler = Callable[["JobContext"], Awaitable[None]]
# The SQL condition under which an event of this type could concern anyone now: asked in the
# statement that records the event, so the question costs a write no round trip of its own.
Audience = Callable[[str], "ColumnElement[bool]"]


@dataclass(frozen=True)
class JobType:
    name: str
    handler: JobHandler
    # None: the JOB_MAX_ATTEMPTS setting.
    max_attempts: int | None = None


@dataclass(frozen=True)
class Subscription:
    """An event handler: run once per event (the worker records which events it handled)."""

    name: str
    event_types: tuple[str, ...]
    handler: EventHandler
    max_attempts: int | None = None
    # When it is false, the event is not queued for this handler at all: a handler with nobody
    # to serve most of the time (webhooks) costs a write nothing but this condition.
    audience: Audience | None = None


@dataclass(frozen=True)
class PeriodicJob:
    name: str
    cron: str
    handler: PeriodicHandler


@dataclass
class Registry:
    jobs: dict[str, JobType] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    periodic: dict[str, PeriodicJob] = field(default_factory=dict)

    def _claim(self, name: str) -> None:
        if name in self.jobs or name in self.subscriptions or name in self.periodic:
            raise RuntimeError(f"a job named {name!r} is already registered")

    def job(
        self, name: str, *, max_attempts: int | None = None
    ) -> Callable[[JobHandler], JobHandler]:
        def register(handler: JobHandler) -> JobHandler:
            self._claim(name)
            self.jobs[name] = JobType(name, handler, max_attempts)
            return handler

        return register

    def subscribe(
        self,
        name: str,
        *event_types: str,
        max_attempts: int | None = None,
        audience: Audience | None = None,
    ) -> Callable[[EventHandler], EventHandler]:
        def register(handler: EventHandler) -> EventHandler:
            self._claim(name)
            unknown = set(event_types) - EVENT_TYPES
            if unknown:
                raise RuntimeError(f"{name} subscribes to unknown events {sorted(unknown)}")
            self.subscriptions[name] = Subscription(
                name, event_types, handler, max_attempts, audience
            )
            return handler

        return register

    def every(self, name: str, cron: str) -> Callable[[PeriodicHandler], PeriodicHandler]:
        def register(handler: PeriodicHandler) -> PeriodicHandler:
            self._claim(name)
            self.periodic[name] = PeriodicJob(name, cron, handler)
            return handler

        return register

    def subscribers_of(self, event_type: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if event_type in s.event_types]


# The domain events, with the ids each carries in `data`. Handlers read current state from
# the database by those ids; the event says what happened, not what things look like now.
EVENT_TYPES = frozenset(
    {
        "user.registered",  # user_id
        "user.followed",  # follower_id, followee_id
        "user.unfollowed",  # follower_id, followee_id
        "article.published",  # article_id, author_id, slug
        "article.updated",  # article_id, author_id, slug
        "article.deleted",  # article_id, author_id, slug
        "article.favorited",  # article_id, author_id, user_id, slug
        "article.unfavorited",  # article_id, author_id, user_id, slug
        "comment.created",  # comment_id, article_id, article_author_id, author_id, slug
        "comment.deleted",  # comment_id, article_id, article_author_id, author_id, slug
    }
)

registry = Registry()
job = registry.job
subscribe = registry.subscribe
every = registry.every

"""Looking into the queue and replaying dead letters: what `conduit jobs` prints and does."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession


@dataclass(frozen=True)
class JobCount:
    job: str
    status: str
    count: int
    oldest: datetime


@dataclass(frozen=True)
class JobRow:
    id: int
    job: str
    status: str
    attempts: int
    created: datetime
    execute_after: datetime
    # The error of the latest failed run, when there was one.
    last_error: str | None


async def counts(session: AsyncSession) -> list[JobCount]:
    result = await session.execute(
        text(
            "SELECT entrypoint, status::text, count(*), min(created) FROM pgqueuer "
            "GROUP BY 1, 2 ORDER BY 1, 2"
        )
    )
    return [JobCount(row[0], row[1], row[2], row[3]) for row in result]


async def jobs(
    session: AsyncSession, *, statuses: list[str], name: str | None = None, limit: int = 50
) -> list[JobRow]:
    """Jobs in `statuses`, oldest first, each with the last error the log holds for it."""
    result = await session.execute(
        text(
            "SELECT job.id, job.entrypoint, job.status::text, job.attempts, job.created, "
            "job.execute_after, last_error.message "
            "FROM pgqueuer AS job "
            "LEFT JOIN LATERAL ("
            "  SELECT log.traceback ->> 'exception_type' || ': ' "
            "         || (log.traceback ->> 'exception_message') AS message "
            "  FROM pgqueuer_log AS log "
            "  WHERE log.job_id = job.id AND log.traceback IS NOT NULL "
            "  ORDER BY log.created DESC LIMIT 1"
            ") AS last_error ON true "
            "WHERE job.status::text = ANY(:statuses) "
            "AND (CAST(:name AS text) IS NULL OR job.entrypoint = :name) "
            "ORDER BY job.created, job.id LIMIT :limit"
        ),
        {"statuses": statuses, "name": name, "limit": limit},
    )
    return [JobRow(*row) for row in result]


async def retry_dead(
    session: AsyncSession, *, ids: list[int] | None = None, name: str | None = None
) -> list[int]:
    """Queue dead letters again with a fresh set of attempts: those with `ids`, or all of job
    `name`, or all. Returns the ids queued."""
    result = await session.execute(
        text(
            "WITH requeued AS ("
            "  UPDATE pgqueuer SET status = 'queued', execute_after = now(), updated = now(), "
            "  attempts = 0, queue_manager_id = NULL "
            "  WHERE status = 'failed' "
            "  AND (CAST(:ids AS bigint[]) IS NULL OR id = ANY(:ids)) "
            "  AND (CAST(:name AS text) IS NULL OR entrypoint = :name) "
            "  RETURNING id, entrypoint, priority"
            "), logged AS ("
            "  INSERT INTO pgqueuer_log (job_id, status, entrypoint, priority) "
            "  SELECT id, 'queued', entrypoint, priority FROM requeued"
            ") SELECT id FROM requeued ORDER BY id"
        ),
        {"ids": ids, "name": name},
    )
    return list(result.scalars())

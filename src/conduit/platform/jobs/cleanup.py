"""Periodic clean-up of the event outbox and the queue's log and statistics."""

from sqlalchemy import text

from conduit.platform.jobs.context import JobContext
from conduit.platform.jobs.registry import every

# Rows deleted per statement: each statement stays well inside the statement timeout however
# large a backlog has grown, and the next run goes on where this one stopped.
BATCH = 5_000
BATCHES_PER_RUN = 100


@every("jobs.delete_old_events", "23 * * * *")
async def delete_old_events(context: JobContext) -> None:
    """Forget events older than EVENT_RETENTION_DAYS once no job for them is left: none
    queued, running or held as a dead letter (whose replay still needs its event); and the
    queue's log and statistics rows as old, except the log of jobs still in the queue, where
    `conduit jobs dead` finds a dead letter's last error."""
    retention = {"days": context.settings.event_retention_days, "batch": BATCH}
    statements = (
        # A job's dedupe key starts with its event's id (see `queue.handling_key`).
        "DELETE FROM domain_event WHERE id IN ("
        " SELECT event.id FROM domain_event AS event"
        " WHERE event.occurred_at < now() - make_interval(days => :days)"
        " AND NOT EXISTS (SELECT 1 FROM pgqueuer AS job"
        "  WHERE split_part(job.dedupe_key, ':', 1) = event.id::text)"
        " LIMIT :batch)",
        "DELETE FROM pgqueuer_log WHERE id IN ("
        " SELECT log.id FROM pgqueuer_log AS log"
        " WHERE log.created < now() - make_interval(days => :days)"
        " AND NOT EXISTS (SELECT 1 FROM pgqueuer AS job WHERE job.id = log.job_id)"
        " LIMIT :batch)",
        "DELETE FROM pgqueuer_statistics WHERE id IN ("
        " SELECT id FROM pgqueuer_statistics"
        " WHERE created < now() - make_interval(days => :days) LIMIT :batch)",
    )
    for statement in statements:
        for _ in range(BATCHES_PER_RUN):
            result = await context.session.execute(text(statement), retention)
            if result.rowcount < BATCH:  # type: ignore[attr-defined]
                break

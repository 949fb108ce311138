"""The hourly clean-up of old domain events and of the queue's log and statistics
(`jobs.delete_old_events`)."""

import uuid
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from conduit.platform.settings import Settings
from tests.helpers import Account, register
from tests.jobs import JobRunner

pytestmark = pytest.mark.anyio

RETENTION_DAYS = 3
OLD = timedelta(days=RETENTION_DAYS, hours=1)
RECENT = timedelta(days=RETENTION_DAYS) - timedelta(hours=1)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    # Not the default of 7, so that a hard-coded retention would fail.
    return settings.model_copy(update={"event_retention_days": RETENTION_DAYS})


async def registration_event(session: AsyncSession, account: Account) -> uuid.UUID:
    event_id = await session.scalar(
        text(
            "SELECT event.id FROM domain_event AS event "
            "JOIN user_account AS account ON account.id = (event.data ->> 'user_id')::bigint "
            "WHERE event.type = 'user.registered' AND account.username = :username"
        ),
        {"username": account.username},
    )
    assert isinstance(event_id, uuid.UUID)
    return event_id


async def age(session: AsyncSession, event_id: uuid.UUID, by: timedelta) -> None:
    await session.execute(
        text("UPDATE domain_event SET occurred_at = now() - CAST(:by AS interval) WHERE id = :id"),
        {"by": by, "id": event_id},
    )


async def set_job_status(session: AsyncSession, event_id: uuid.UUID, status: str) -> None:
    result = await session.execute(
        text(
            "UPDATE pgqueuer SET status = CAST(:status AS pgqueuer_status) "
            "WHERE dedupe_key LIKE :prefix"
        ),
        {"status": status, "prefix": f"{event_id}:%"},
    )
    assert result.rowcount >= 1  # type: ignore[attr-defined]


async def remaining_events(session: AsyncSession, *event_ids: uuid.UUID) -> set[uuid.UUID]:
    result = await session.scalars(
        text("SELECT id FROM domain_event WHERE id = ANY(:ids)"), {"ids": list(event_ids)}
    )
    return set(result)


async def handlings(session: AsyncSession, event_id: uuid.UUID) -> int:
    count = await session.scalar(
        text("SELECT count(*) FROM event_handling WHERE event_id = :id"), {"id": event_id}
    )
    assert isinstance(count, int)
    return count


async def test_deletes_old_events_with_no_job_left(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    accounts = {name: await register(client) for name in ("old_done", "recent_done")}
    await jobs.run_all()
    accounts |= {name: await register(client) for name in ("queued", "running", "dead")}
    events = {
        name: await registration_event(session, account) for name, account in accounts.items()
    }
    await set_job_status(session, events["running"], "picked")
    await set_job_status(session, events["dead"], "failed")
    for name in ("old_done", "queued", "running", "dead"):
        await age(session, events[name], OLD)
    await age(session, events["recent_done"], RECENT)
    assert await handlings(session, events["old_done"]) >= 1

    await jobs.run_periodic("jobs.delete_old_events")

    remaining = await remaining_events(session, *events.values())
    assert remaining == {events[name] for name in ("recent_done", "queued", "running", "dead")}
    # Its record of which handlers ran went with it.
    assert await handlings(session, events["old_done"]) == 0
    assert await handlings(session, events["recent_done"]) >= 1
    # The job kept back still runs with its event.
    assert "users.send_welcome_email" in await jobs.run_all()


async def test_an_old_event_goes_once_its_last_job_is_done(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    account = await register(client)
    event_id = await registration_event(session, account)
    await age(session, event_id, OLD)

    await jobs.run_periodic("jobs.delete_old_events")
    assert await remaining_events(session, event_id) == {event_id}

    await jobs.run_all()
    await jobs.run_periodic("jobs.delete_old_events")
    assert await remaining_events(session, event_id) == set()


@pytest.mark.parametrize("table", ["pgqueuer_log", "pgqueuer_statistics"])
async def test_deletes_old_queue_log_and_statistics(
    session: AsyncSession, jobs: JobRunner, table: str
) -> None:
    columns = {
        "pgqueuer_log": ("job_id, status, priority, entrypoint, created", ":job_id, "),
        "pgqueuer_statistics": ("count, status, priority, entrypoint, created", "1, "),
    }[table]
    ids = {}
    for when, ago in (("old", OLD), ("recent", RECENT)):
        # The table name comes from the parameters above.
        ids[when] = await session.scalar(
            text(
                f"INSERT INTO {table} ({columns[0]}) VALUES ({columns[1]}"  # noqa: S608
                "'successful', 0, 'users.send_welcome_email', now() - CAST(:ago AS interval)) "
                "RETURNING id"
            ),
            # No job has a negative id: this log row's job is gone from the queue.
            {"job_id": -1, "ago": ago} if table == "pgqueuer_log" else {"ago": ago},
        )

    await jobs.run_periodic("jobs.delete_old_events")

    kept = await session.scalars(
        text(f"SELECT id FROM {table} WHERE id = ANY(:ids)"),  # noqa: S608
        {"ids": list(ids.values())},
    )
    assert set(kept) == {ids["recent"]}


async def test_keeps_the_old_log_of_a_dead_letter(
    client: httpx.AsyncClient, session: AsyncSession, jobs: JobRunner
) -> None:
    """`conduit jobs dead` reads a dead letter's last error from the log, however old."""
    await register(client)
    job_id = await session.scalar(
        text(
            "UPDATE pgqueuer SET status = 'failed' WHERE id = (SELECT max(id) FROM pgqueuer) "
            "RETURNING id"
        )
    )
    log_id = await session.scalar(
        text(
            "INSERT INTO pgqueuer_log (job_id, status, priority, entrypoint, created, traceback) "
            "VALUES (:job_id, 'failed', 0, 'users.send_welcome_email', "
            "now() - CAST(:ago AS interval), '{}') RETURNING id"
        ),
        {"job_id": job_id, "ago": OLD},
    )

    await jobs.run_periodic("jobs.delete_old_events")

    assert await session.scalar(text("SELECT id FROM pgqueuer_log WHERE id = :id"), {"id": log_id})

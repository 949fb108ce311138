"""job queue vacuum

Every job inserts a row into the queue table, updates it when picked and deletes it when done,
so the table is a few live rows over a stream of dead ones. Each worker's dequeue reads past
the dead rows until a vacuum removes them: at 160,000 dead rows, left by about half an hour of
benchmark load on a server with autovacuum off, a dequeue took 14.5 ms instead of 0.2 ms and
was the database's costliest statement. These are the queue library's own recommended settings
(pgqueuer's `autovac` command): vacuum the queue and schedule tables, unthrottled, after a
thousand dead rows however large a backlog grows (the default waits for a fifth of the table),
and leave room in each page for updates that need no new index entries. The log and statistics
tables only grow between the cleanup job's batch deletes, so theirs wait longer. None of this
helps a server whose autovacuum is off.

Revision ID: d52f8c0e1b37
Revises: c41e7b9d0a26
Create Date: 2026-12-06 16:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "d52f8c0e1b37"
down_revision: str | None = "c41e7b9d0a26"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHURNING = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "500",
    "autovacuum_vacuum_cost_limit": "10000",
    "autovacuum_vacuum_cost_delay": "0",
    "fillfactor": "70",
}
GROWING = {
    "autovacuum_vacuum_scale_factor": "0.95",
    "autovacuum_vacuum_threshold": "1000000",
    "autovacuum_analyze_scale_factor": "0.05",
    "autovacuum_analyze_threshold": "10000",
}
STORAGE = {
    "pgqueuer": CHURNING,
    "pgqueuer_schedules": CHURNING,
    "pgqueuer_log": GROWING,
    "pgqueuer_statistics": GROWING,
}


def upgrade() -> None:
    for table, parameters in STORAGE.items():
        settings = ", ".join(f"{name} = {value}" for name, value in parameters.items())
        op.execute(f"ALTER TABLE {table} SET ({settings})")


def downgrade() -> None:
    for table, parameters in STORAGE.items():
        op.execute(f"ALTER TABLE {table} RESET ({', '.join(parameters)})")

"""Background work: domain events, the durable job queue and the worker.

A write records its events and jobs in its own transaction (`publish`, `enqueue`), so a
rolled-back change leaves nothing behind and a crash after commit loses nothing. Workers claim
the jobs from PostgreSQL (pgqueuer, `FOR UPDATE SKIP LOCKED`), retry failures with backoff and
hold the ones that exhaust their attempts as dead letters.
"""

"""`pgqueue_finished` is sent only by a statement that leaves a job finished.

- Trigger `jobs_notify_finished` (migration 0009) becomes `AFTER UPDATE ... REFERENCING NEW TABLE AS new_jobs`, and
  its function notifies only when a row it wrote is completed, failed or cancelled.

Why: the trigger fired after every statement that set a status, so every claim and every lease change sent a
notification that no `Queue.result()` waiter wanted. A notification is not free: at commit it takes the lock
that serialises all notifying commits of the cluster (the enqueues' `pgqueue_jobs` ones too) and wakes every
listening backend of the database to read it. A claim of 20 spent about 0.15 ms of its 1.3 ms on it, idle
workers' claims included.

A column list (`UPDATE OF status`) cannot go with a transition table, so the trigger now fires after every
UPDATE of jobs; the function's look at the rows costs less than the notification it saves, and the rows are
captured once for this trigger and `jobs_settle_dependents` (migration 0010) alike. A statement that writes a job
already finished (a result rewritten by hand) notifies too: waiters read their job again and wait on.

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-07
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

# The channel is pgqueue.store.schema.FINISHED_CHANNEL (a migration keeps the text it was written with).
NOTIFY_FINISHED_FUNCTION = """
CREATE OR REPLACE FUNCTION pgqueue.notify_finished_job() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT FROM new_jobs WHERE new_jobs.status IN ('completed', 'failed', 'cancelled')) THEN
        PERFORM pg_notify('pgqueue_finished', '');
    END IF;
    RETURN NULL;
END
$$
"""

NOTIFY_FINISHED_TRIGGER = """
CREATE TRIGGER jobs_notify_finished
AFTER UPDATE ON pgqueue.jobs
REFERENCING NEW TABLE AS new_jobs
FOR EACH STATEMENT
EXECUTE FUNCTION pgqueue.notify_finished_job()
"""


def _results_0009():  # type: ignore[no-untyped-def]
    """Migration 0009's module (its texts of the trigger and its function), for the downgrade."""
    path = Path(__file__).with_name("0009_results_uniqueness.py")
    spec = importlib.util.spec_from_file_location("pgqueue_migration_0009", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def upgrade() -> None:
    op.execute("DROP TRIGGER jobs_notify_finished ON pgqueue.jobs")
    op.execute(NOTIFY_FINISHED_FUNCTION)
    op.execute(NOTIFY_FINISHED_TRIGGER)


def downgrade() -> None:
    results = _results_0009()
    op.execute("DROP TRIGGER jobs_notify_finished ON pgqueue.jobs")
    op.execute("DROP FUNCTION pgqueue.notify_finished_job()")
    op.execute(results.NOTIFY_FINISHED_FUNCTION)
    op.execute(results.NOTIFY_FINISHED_TRIGGER)

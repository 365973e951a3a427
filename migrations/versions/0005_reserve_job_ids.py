"""pgqueue.reserve_job_ids(count): job ids for a COPY batch or a cron fire, without USAGE on the id sequence.

A single enqueue is an INSERT into the identity column `jobs.id`, for which PostgreSQL checks no privilege on the
column's sequence. A batch written with COPY and a cron fire draw their ids first (COPY cannot return them; a fire
names its job before inserting it), and nextval() does check: the role needed USAGE on the sequence, which a role
that may only insert jobs should not need. This function draws them as its owner (the migration role, the
sequence's owner) instead.

SECURITY DEFINER done the safe way: search_path pinned to pg_catalog, pgqueue, with pg_temp last (unlisted, it would
be searched first for tables), every name in the body schema-qualified anyway, and no argument that reaches SQL
text. EXECUTE stays granted to PUBLIC (as for every function by default; said explicitly so that an owner's default
privileges cannot take it away): calling it needs USAGE on schema pgqueue too, and all it can do is skip job ids,
which a role allowed to insert jobs can do by inserting. Roles that had been granted USAGE on the sequence keep
working through the upgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

RESERVE_FUNCTION = """
CREATE FUNCTION pgqueue.reserve_job_ids(count integer) RETURNS SETOF bigint
LANGUAGE sql
VOLATILE
SECURITY DEFINER
SET search_path = pg_catalog, pgqueue, pg_temp
AS $$
    SELECT pg_catalog.nextval('pgqueue.jobs_id_seq'::pg_catalog.regclass)
    FROM pg_catalog.generate_series(1, count)
$$
"""


def upgrade() -> None:
    op.execute(RESERVE_FUNCTION)
    op.execute(
        "COMMENT ON FUNCTION pgqueue.reserve_job_ids(integer) IS "
        "'ids for jobs inserted with an explicit id (COPY batches, cron fires), ascending; "
        "runs as its owner so that callers need no USAGE on the id sequence'"
    )
    op.execute("GRANT EXECUTE ON FUNCTION pgqueue.reserve_job_ids(integer) TO PUBLIC")


def downgrade() -> None:
    op.execute("DROP FUNCTION pgqueue.reserve_job_ids(integer)")

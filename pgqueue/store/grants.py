"""The privileges of pgqueue's roles, as the GRANT statements the schema's owner runs (`pgqueue grant`).

Three roles, each with only what its statements need:

- the **migration role** runs `pgqueue migrate` and owns schema `pgqueue` and everything in it. It needs CREATE on
  the database only to create the schema the first time (or a superuser creates it for it:
  `CREATE SCHEMA pgqueue AUTHORIZATION <role>`). Checking a database that is at head needs no more than reading
  `pgqueue.alembic_version`.
- the **application role** enqueues: `enqueue`, `enqueue_many` (also the COPY path of large batches), dedup keys.
  It inserts jobs and reads a job's id, status and dedup key; it cannot change or delete a job, read another
  job's arguments, or touch schedules.
- the **worker role** runs `pgqueue work`: claims, completions, failures, rescues, pruning, the registry of
  workers, cron schedules and their fires; the operator commands (`jobs`, `show`, `retry`, `retry-failed`,
  `cancel`, `prune`, `status`) need no more; it may read the history views (`attempts`, `task_hours`, `stuck_jobs`).

LISTEN and NOTIFY need no privilege; `pgqueue.reserve_job_ids` (ids of COPY batches and cron fires, migration
0005) runs as its owner, so no role needs USAGE on the id sequence. CONNECT on the database is PUBLIC's unless
revoked there; it is the database owner's to grant, so it is not among these statements.

No DEFAULT PRIVILEGES: they would give every future table the same privileges, while the roles need different
ones per table (the application role only touches `jobs`). Instead the statements are idempotent: run them again
after a `pgqueue migrate` that adds tables, and `missing` tells which privileges a role lacks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, LiteralString

import psycopg
from psycopg import sql

from pgqueue.store.rows import Granted
from pgqueue.store.run import first
from pgqueue.store.schema import SCHEMA, VIEWS
from pgqueue.store.statements import Query


@dataclass(frozen=True)
class Grant:
    """Privileges on one object of schema pgqueue (or on the schema itself)."""

    privileges: tuple[LiteralString, ...]
    kind: LiteralString  # SCHEMA, TABLE or FUNCTION
    name: str  # the object's name in schema pgqueue; for SCHEMA the schema's
    columns: tuple[str, ...] = ()  # column privileges: the privileges on these columns only
    argument_types: tuple[LiteralString, ...] = ()  # for FUNCTION

    @property
    def object_name(self) -> str:
        """The object as the has_*_privilege functions take it (and as people read it): `pgqueue.jobs`."""
        if self.kind == "SCHEMA":
            return self.name
        arguments = f"({', '.join(self.argument_types)})" if self.kind == "FUNCTION" else ""
        return f"{SCHEMA}.{self.name}{arguments}"

    def statement(self, role: str) -> sql.Composed:
        if self.kind == "SCHEMA":
            target: sql.Composable = sql.Identifier(self.name)
        elif self.kind == "TABLE":
            target = sql.Identifier(SCHEMA, self.name)
        else:  # argument types are this module's constants: SQL as written
            types = sql.SQL(", ").join(sql.SQL(t) for t in self.argument_types)
            target = sql.SQL("{}({})").format(sql.Identifier(SCHEMA, self.name), types)
        columns = sql.SQL("")
        if self.columns:
            columns = sql.SQL(" ({})").format(sql.SQL(", ").join(sql.Identifier(c) for c in self.columns))
        privileges = sql.SQL(", ").join(sql.Composed([sql.SQL(p), columns]) for p in self.privileges)
        return sql.SQL("GRANT {} ON {} {} TO {}").format(privileges, sql.SQL(self.kind), target, sql.Identifier(role))


_SCHEMA_USAGE = Grant(("USAGE",), "SCHEMA", SCHEMA)
# Both roles also get: the id function, and the version table, so that `pgqueue migrate` run as either (in a deploy
# step, say) succeeds when the schema is at head and fails with one line when it is not.
_IDS_AND_VERSION = (
    Grant(("EXECUTE",), "FUNCTION", "reserve_job_ids", argument_types=("integer",)),
    Grant(("SELECT",), "TABLE", "alembic_version"),
)

APP_GRANTS: tuple[Grant, ...] = (
    _SCHEMA_USAGE,
    Grant(("INSERT",), "TABLE", "jobs"),
    # RETURNING id; a dedup key's conflict check and its lookup of the job holding the key; unique_for's look-up of
    # a recently completed job (finished_at); debounce's conflict check and new run_at (debounce_key, created_at,
    # run_at); Queue.result() reads the outcome (result, error). Never args: no reading other jobs' arguments.
    Grant(
        ("SELECT",),
        "TABLE",
        "jobs",
        columns=("id", "status", "dedup_key", "finished_at", "debounce_key", "created_at", "run_at", "result", "error"),
    ),
    # Debounce updates the pending job of its key in place: new args and meta, run_at pushed.
    Grant(("UPDATE",), "TABLE", "jobs", columns=("args", "run_at", "meta")),
    # Jobs enqueued `after` others: their edges (settled by triggers that run as the schema's owner).
    Grant(("INSERT",), "TABLE", "job_dependencies"),
    # A debounced enqueue updates its pending job: the workflow trigger (run as the updating role) looks whether
    # the job has dependents to settle.
    Grant(("SELECT",), "TABLE", "job_dependencies", columns=("depends_on", "parent_status")),
    *_IDS_AND_VERSION,
)

WORKER_GRANTS: tuple[Grant, ...] = (
    _SCHEMA_USAGE,
    # Claims, acks, failures, rescue, cancel and retry-failed update; cron fires and handlers insert; pruning deletes.
    Grant(("SELECT", "INSERT", "UPDATE", "DELETE"), "TABLE", "jobs"),
    Grant(("SELECT", "INSERT"), "TABLE", "job_dependencies"),  # a handler's parents; handlers enqueue `after`
    Grant(("SELECT", "INSERT", "UPDATE"), "TABLE", "schedules"),  # registered and advanced by every worker
    Grant(("SELECT", "INSERT", "DELETE"), "TABLE", "schedule_fires"),  # one row per fire; pruned
    Grant(("SELECT",), "TABLE", "queues"),  # a claim reads which queues are paused
    # Each worker's row: upserted, heartbeat, stopped; rows of workers long silent pruned.
    Grant(("SELECT", "INSERT", "UPDATE", "DELETE"), "TABLE", "workers"),
    # Limits (migrations 0008, 0014): read by every claim, synced by workers at start and by `pgqueue queues
    # limit`. (Pausing a queue stays an owner's action, as before: the worker role only reads pgqueue.queues.)
    Grant(("SELECT", "INSERT", "UPDATE", "DELETE"), "TABLE", "limits"),
    Grant(("EXECUTE",), "FUNCTION", "grant_limits", argument_types=("bigint[]", "integer[]", "bigint[]", "integer")),
    # The claim's pick of pending jobs, planned alike whatever the statistics (migration 0017).
    Grant(("EXECUTE",), "FUNCTION", "pending_in_line", argument_types=("integer", "text[]")),
    Grant(("EXECUTE",), "FUNCTION", "queue_pending_in_line", argument_types=("text", "integer")),
    # The claim's write of the jobs it picked, by primary key whatever the statistics (migration 0019).
    Grant(
        ("EXECUTE",),
        "FUNCTION",
        "claim_picked",
        argument_types=("bigint[]", "timestamp with time zone[]", "pgqueue.limit_decision[]", "text", "interval"),
    ),
    # An idle worker's claim while no limit exists (migration 0022).
    Grant(("EXECUTE",), "FUNCTION", "claim_unlimited", argument_types=("integer", "text[]", "text", "interval")),
    # The acks a worker buffered, written by primary key whatever the statistics (migration 0021).
    Grant(
        ("EXECUTE",),
        "FUNCTION",
        "record_outcomes",
        argument_types=("bigint[]", "integer[]", "bigint[]", "integer[]", "jsonb[]", "text"),
    ),
    # The held jobs a claim hands the slots its completions free (migration 0015).
    Grant(("EXECUTE",), "FUNCTION", "held_in_line", argument_types=("text", "integer", "text[]", "text[]")),
    # The previous release's claim function, kept for its workers during a rolling deploy (migration 0014).
    Grant(("EXECUTE",), "FUNCTION", "grant_slots", argument_types=("bigint[]", "bigint[]")),
    Grant(("EXECUTE",), "FUNCTION", "job_limit_keys", argument_types=("bigint[]",)),
    # A key's slots in stripes (migration 0016): the slots of each stripe and the jobs running in it.
    Grant(("EXECUTE",), "FUNCTION", "stripe_slots", argument_types=("integer", "integer")),
    Grant(("EXECUTE",), "FUNCTION", "stripe_running", argument_types=("text", "text", "text", "jsonb", "bigint[]")),
    # Rate limits (migration 0014): the claim counts, adds and drops the starts in each window; maintenance prunes.
    Grant(("EXECUTE",), "FUNCTION", "job_rate_keys", argument_types=("bigint[]",)),
    Grant(("SELECT", "INSERT", "DELETE"), "TABLE", "rate_starts"),
    Grant(("EXECUTE",), "FUNCTION", "rate_text", argument_types=("integer", "interval")),
    Grant(("EXECUTE",), "FUNCTION", "limit_of", argument_types=("text",)),
    *_IDS_AND_VERSION,
    # The history views (migration 0011), for the operators who run as this role; they show args and errors,
    # so the application role does not get them.
    *(Grant(("SELECT",), "TABLE", view) for view in VIEWS),
)


def statements(*, app_role: str | None = None, worker_role: str | None = None) -> list[sql.Composed]:
    """The GRANT statements for the given roles (either may be left out), in order."""
    grants: list[sql.Composed] = []
    for role, role_grants in ((app_role, APP_GRANTS), (worker_role, WORKER_GRANTS)):
        if role is not None:
            grants.extend(grant.statement(role) for grant in role_grants)
    return grants


def script(*, app_role: str | None = None, worker_role: str | None = None) -> str:
    """The statements as SQL text, one per line, for `pgqueue grant --print` or a migration script of your own."""
    return "".join(
        f"{statement.as_string()};\n" for statement in statements(app_role=app_role, worker_role=worker_role)
    )


def apply(conn: psycopg.Connection[Any], *, app_role: str | None = None, worker_role: str | None = None) -> None:
    """Run the statements in one transaction; `conn` must be the schema owner's (or a superuser's)."""
    with conn.transaction():
        for statement in statements(app_role=app_role, worker_role=worker_role):
            conn.execute(statement)


def missing(conn: psycopg.Connection[Any], *, app_role: str | None = None, worker_role: str | None = None) -> list[str]:
    """The privileges the roles lack, one line each (`pgqueue_app: INSERT on pgqueue.jobs`); [] when none."""
    lacking: list[str] = []
    for role, role_grants in ((app_role, APP_GRANTS), (worker_role, WORKER_GRANTS)):
        if role is not None:
            lacking.extend(f"{role}: {line}" for line in _missing_for(conn, role, role_grants))
    return lacking


_HAS_PRIVILEGE: dict[str, LiteralString] = {
    "SCHEMA": "SELECT has_schema_privilege(%(role)s, %(name)s, %(privilege)s)",
    "TABLE": "SELECT has_table_privilege(%(role)s, %(name)s, %(privilege)s)",
    "COLUMN": "SELECT has_column_privilege(%(role)s, %(name)s, %(column)s, %(privilege)s)",
    "FUNCTION": "SELECT has_function_privilege(%(role)s, %(name)s, %(privilege)s)",
}


def _missing_for(conn: psycopg.Connection[Any], role: str, role_grants: Sequence[Grant]) -> list[str]:
    lacking = []
    for grant in role_grants:
        for privilege in grant.privileges:
            params = {"role": role, "name": grant.object_name, "privilege": privilege}
            if not grant.columns:
                row = first(conn, Query(_HAS_PRIVILEGE[grant.kind], params, Granted))
                if not (row and row.granted):
                    lacking.append(f"{privilege} on {grant.object_name}")
                continue
            for column in grant.columns:
                row = first(conn, Query(_HAS_PRIVILEGE["COLUMN"], {**params, "column": column}, Granted))
                if not (row and row.granted):
                    lacking.append(f"{privilege} ({column}) on {grant.object_name}")
    return lacking

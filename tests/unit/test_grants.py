"""The GRANT statements pgqueue.grants writes: quoting, and coverage of every table (tested with real roles in
tests/integration/test_privileges.py)."""

from __future__ import annotations

from pgqueue.store import grants
from pgqueue.store.schema import VIEWS, metadata


def test_script_quotes_role_names() -> None:
    text = grants.script(app_role='we"ird app', worker_role="Worker")
    lines = text.splitlines()
    assert lines[0] == 'GRANT USAGE ON SCHEMA "pgqueue" TO "we""ird app";'
    assert (
        'GRANT SELECT ("id", "status", "dedup_key", "finished_at", "debounce_key", "created_at", "run_at", "result", '
        '"error") ON TABLE "pgqueue"."jobs" TO "we""ird app";'
    ) in lines
    assert 'GRANT EXECUTE ON FUNCTION "pgqueue"."reserve_job_ids"(integer) TO "Worker";' in lines
    assert 'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE "pgqueue"."jobs" TO "Worker";' in lines
    assert len(lines) == len(grants.APP_GRANTS) + len(grants.WORKER_GRANTS)
    assert grants.script(worker_role="w").count("\n") == len(grants.WORKER_GRANTS)
    assert grants.script() == ""


def test_every_table_is_covered() -> None:
    """A migration that adds a table must say here what each role may do with it."""
    tables = {table.name for table in metadata.tables.values()} | {"alembic_version"}
    worker_tables = {grant.name for grant in grants.WORKER_GRANTS if grant.kind == "TABLE"}
    assert worker_tables == tables | set(VIEWS)  # the history views: read by operators, not by the app
    app_tables = {grant.name for grant in grants.APP_GRANTS if grant.kind == "TABLE"}
    assert app_tables == {"jobs", "job_dependencies", "alembic_version"}
    base = {"pgqueue", "pgqueue.reserve_job_ids(integer)"}
    assert {g.object_name for g in grants.APP_GRANTS if g.kind != "TABLE"} == base
    # The claim's limits (migrations 0008, 0014, 0015 and 0016), its pick (0017) and its write (0019) run these.
    assert {g.object_name for g in grants.WORKER_GRANTS if g.kind != "TABLE"} == base | {
        "pgqueue.grant_limits(bigint[], integer[], bigint[], integer)",
        "pgqueue.grant_slots(bigint[], bigint[])",
        "pgqueue.held_in_line(text, integer, text[], text[])",
        "pgqueue.job_limit_keys(bigint[])",
        "pgqueue.job_rate_keys(bigint[])",
        "pgqueue.limit_of(text)",
        "pgqueue.claim_picked(bigint[], timestamp with time zone[], pgqueue.limit_decision[], text, interval)",
        "pgqueue.record_outcomes(bigint[], integer[], bigint[], integer[], jsonb[], text)",
        "pgqueue.claim_unlimited(integer, text[], text, interval)",
        "pgqueue.pending_in_line(integer, text[])",
        "pgqueue.queue_pending_in_line(text, integer)",
        "pgqueue.rate_text(integer, interval)",
        "pgqueue.stripe_running(text, text, text, jsonb, bigint[])",
        "pgqueue.stripe_slots(integer, integer)",
    }

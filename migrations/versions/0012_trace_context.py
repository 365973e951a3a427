"""jobs.trace_context: the trace context current when the job was enqueued (OpenTelemetry, the `tracing` extra).

A JSON object as a W3C Trace Context propagator writes it (`{"traceparent": "00-...-...-01"}`, with `tracestate`
when there is one), NULL when the enqueuing code was not tracing. A worker with --tracing links each attempt's span
to it. Nullable with no default: adding it rewrites nothing, and jobs enqueued without tracing cost a NULL.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "jobs",
        sa.Column("trace_context", JSONB, comment="the enqueuing trace context (W3C traceparent), if any"),
        schema="pgqueue",
    )


def downgrade() -> None:
    op.drop_column("jobs", "trace_context", schema="pgqueue")

"""pgqueue's web dashboard (optional extra: `pip install "pgqueue[dashboard]"`): see and steer the queue.

Serve it with `pgqueue dashboard`, or mount it in your own ASGI app:

    from pgqueue.dashboard import create_app
    app.mount("/admin/queue", create_app(dsn))      # FastAPI or Starlette

A mounted dashboard leaves authentication to the host app: protect its prefix there (or pass `auth=`).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = ["create_app"]


def create_app(
    dsn: str | None = None,
    *,
    read_only: bool = False,
    auth: str | tuple[str, str] | None = None,
    secret: bytes | str | None = None,
) -> Starlette:
    """The dashboard as an ASGI app (Starlette); every link and form respects the prefix it is mounted under.

    dsn: the database (default: $PGQUEUE_DSN, then $DATABASE_URL, else the embedded server), connected on the first
    request. read_only: hide actions and refuse them (403). auth: "user:password" (or a pair) to require HTTP Basic
    authentication; a mounted app usually leaves that to its host app, which must then protect the mount point: the
    dashboard can retry and cancel any job. secret: the key that signs CSRF tokens (default
    $PGQUEUE_DASHBOARD_SECRET, else random per process); give the same one to every process serving the dashboard.
    """
    try:
        from pgqueue.dashboard.app import build_app
    except ImportError as exc:  # pragma: no cover - depends on what is installed
        raise ImportError(f'the pgqueue dashboard needs its extra: pip install "pgqueue[dashboard]" ({exc})') from exc
    from pgqueue.dashboard.security import parse_auth

    credentials = parse_auth(auth) if isinstance(auth, str) or auth is None else auth
    key = secret if secret is not None else os.environ.get("PGQUEUE_DASHBOARD_SECRET") or None
    return build_app(
        dsn,
        read_only=read_only,
        auth=credentials,
        secret=key.encode() if isinstance(key, str) else key,
    )

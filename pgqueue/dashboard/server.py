"""`pgqueue dashboard`: serve the dashboard with uvicorn, on loopback unless authentication is set."""

from __future__ import annotations

import logging

from pgqueue.dashboard.security import UsageError, check_bind, parse_auth

__all__ = ["UsageError", "serve"]

log = logging.getLogger("pgqueue.dashboard")


def serve(*, dsn: str, host: str, port: int, read_only: bool, auth: str | None) -> None:
    """Run until SIGINT/SIGTERM. Raises UsageError (before anything listens) for a refused setting."""
    credentials = parse_auth(auth)
    check_bind(host, credentials)
    if not 0 < port < 65536:
        raise UsageError(f"--port must be between 1 and 65535 (got {port})")
    try:
        import uvicorn

        from pgqueue.dashboard import create_app
    except ImportError as exc:
        raise UsageError(f'the dashboard needs its extra: pip install "pgqueue[dashboard]" ({exc})') from None
    app = create_app(dsn, read_only=read_only, auth=credentials)
    shown = f"[{host}]" if ":" in host else host
    mode = ", read-only" if read_only else ""
    guard = ", HTTP Basic auth" if credentials else ""
    log.info("pgqueue dashboard on http://%s:%d/%s%s", shown, port, mode, guard)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, server_header=False)

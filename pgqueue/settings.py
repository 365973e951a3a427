"""Every setting once: its name, type, default, bounds, environment variable, CLI flag and help.

`WorkerSettings` is built from these definitions (its defaults and its checks come from them), `pgqueue work`
derives its options from them, and a supervisor derives its children's command line from them: a new setting
is one `setting(...)` line here. Also where the database is: --dsn, PGQUEUE_DSN, DATABASE_URL, else the
embedded server. Pure code.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from pgqueue.durations import format_duration, parse_duration

DSN_ENV_VARS = ("PGQUEUE_DSN", "DATABASE_URL")
ENV_PREFIX = "PGQUEUE_"
# The default ceiling of one claim (slots + claimed ahead). Since acks ride on the claim statement, bigger
# claims pay (measured, no-op jobs, 1 process, concurrency 16: claims up to 48 -> 23k jobs/s, 256 -> 39k,
# 512 -> 43k); each is one index scan and one UPDATE however many rows it takes.
PREFETCH_CLAIM_UP_TO = 512
LOG_FORMATS = ("text", "json")


@dataclass(frozen=True)
class Setting:
    """One setting's definition. `minimum` is inclusive unless `above` (then the value must exceed it)."""

    name: str
    help: str
    minimum: float | None = None
    above: bool = False
    maximum: float | None = None  # inclusive
    choices: tuple[str, ...] = ()  # the values a text setting may take
    short: str | None = None  # a one-letter CLI alias, e.g. -q
    cli_name: str | None = None  # the flag's name where it differs from the setting's (`--queue` for queues)
    secret: bool = False  # may hold a password: reaches supervised children by environment, not argv
    default_text: str | None = None  # the default as --help shows it, where the value itself would not say it
    parse: Callable[[str], Any] | None = None  # text -> value, for types the CLI cannot convert itself
    format: Callable[[Any], str] = str  # value -> text, for a child's command line

    @property
    def flag(self) -> str:
        return "--" + (self.cli_name or self.name).replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    def check(self, value: Any) -> None:
        if self.choices and value not in self.choices:
            raise ValueError(f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}")
        if value is not None and self.maximum is not None and not isinstance(value, bool) and value > self.maximum:
            raise ValueError(f"{self.name} must be at most {self.maximum:g}")
        if value is None or self.minimum is None or isinstance(value, bool):
            return
        number = value.total_seconds() if isinstance(value, timedelta) else value
        if number < self.minimum or (self.above and number == self.minimum):
            bound = f"greater than {self.minimum:g}" if self.above else f"at least {self.minimum:g}"
            raise ValueError(f"{self.name} must be {bound}")


def setting(default: Any = None, *, factory: Callable[[], Any] | None = None, **definition: Any) -> Any:
    """A WorkerSettings field defined by `Setting(name=<the field's name>, **definition)`."""
    meta = {"setting": definition}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class WorkerSettings:
    """How a worker runs. Each field is a setting: `pgqueue work --<name>` and `$PGQUEUE_<NAME>` set it too."""

    queues: list[str] | None = setting(
        None,
        cli_name="queue",
        short="-q",
        default_text="all",
        help="Queue to work on (repeatable; in $PGQUEUE_QUEUES separated by spaces).",
    )
    concurrency: int = setting(16, minimum=1, help="Jobs run at once per process.")
    burst: bool = setting(False, help="Exit 0 once no job is runnable now.")
    poll_interval: float = setting(
        30.0, minimum=0, above=True, help="Seconds between polls, the fallback when no notification arrives."
    )
    lease: float = setting(
        30.0, minimum=3, help="Seconds without heartbeat before a running job counts as lost and is rescued."
    )
    grace_period: float = setting(
        30.0, minimum=0, help="On SIGTERM/SIGINT: seconds running jobs get to finish before they are handed back."
    )
    maintenance_interval: float | None = setting(
        None, minimum=0, above=True, default_text="lease/2, at most 15", help="Seconds between rescues of lost jobs."
    )
    retention: timedelta = setting(
        factory=lambda: timedelta(days=7),
        parse=parse_duration,
        format=format_duration,
        default_text="7d",
        help="Completed and cancelled jobs are pruned after this long (30s, 5m, 2h, 7d); failed ones are kept.",
    )
    ack_delay: float = setting(0.02, minimum=0, help="Seconds completions are batched for at most.")
    # Jobs claimed ahead of free slots while handlers are short (0: never). The next claim's round trip then
    # overlaps the running batch instead of following it, and claims come in bigger batches (fewer commits
    # per job). None: as many as fill a claim of PREFETCH_CLAIM_UP_TO jobs. Either way no more than about
    # 50 ms of work at the current average run time, and none while jobs take 10 ms or more.
    prefetch: int | None = setting(
        None,
        minimum=0,
        default_text=f"fill a claim of {PREFETCH_CLAIM_UP_TO}",
        help="Jobs claimed ahead of free slots while jobs are short (0: never).",
    )
    reconnect_max_delay: float = setting(
        10.0, minimum=0, above=True, help="Longest pause, in seconds, between attempts to reconnect."
    )
    # Behind a transaction-pooling PgBouncer, point this at PostgreSQL directly: LISTEN cannot work through
    # such a pooler, and without it the worker polls.
    listen_dsn: str | None = setting(
        None,
        secret=True,
        default_text="the worker's DSN",
        help="Direct PostgreSQL DSN for LISTEN when --dsn goes through PgBouncer (transaction pooling).",
    )

    # Observability (README "Observability"). Each process serves its own metrics: under --workers N the
    # supervisor gives its children the ports metrics_port, metrics_port + 1, ... (see cli/work.py).
    metrics_port: int | None = setting(
        None,
        minimum=1,
        maximum=65535,
        parse=int,
        default_text="off",
        help="Serve Prometheus metrics on this port (needs the `metrics` extra); with --workers N, N ports from it.",
    )
    metrics_interval: float = setting(
        15.0,
        minimum=1,
        help="Seconds between refreshes of the queue-depth gauges (by one worker of the cluster at a time).",
    )
    tracing: bool = setting(
        False,
        help="Run each attempt in an OpenTelemetry span linked to its enqueuing span (needs the `tracing` extra).",
    )
    log_format: str = setting(
        "text",
        choices=LOG_FORMATS,
        parse=str,
        help="Log lines as text, or as one JSON object per line (json), with a line per job event.",
    )

    def __post_init__(self) -> None:
        for definition in worker_settings():
            definition.check(getattr(self, definition.name))
        if self.maintenance_interval is None:
            self.maintenance_interval = min(15.0, self.lease / 2)
        if self.prefetch is None:
            self.prefetch = max(0, PREFETCH_CLAIM_UP_TO - self.concurrency)

    @classmethod
    def field_default(cls, name: str) -> Any:
        found = next(f for f in dataclasses.fields(cls) if f.name == name)
        return found.default_factory() if found.default_factory is not dataclasses.MISSING else found.default

    def command_line(self) -> list[str]:
        """The `pgqueue work` options that give these settings (those left at their default are left out, and so
        are secret ones: see `environment`)."""
        arguments: list[str] = []
        for definition in worker_settings():
            value = getattr(self, definition.name)
            if definition.secret or value == self.field_default(definition.name) or _derived(self, definition.name):
                continue
            if isinstance(value, bool):
                arguments.append(definition.flag if value else f"--no-{definition.flag[2:]}")
            elif isinstance(value, list):
                arguments += [part for item in value for part in (definition.flag, str(item))]
            else:
                arguments += [definition.flag, definition.format(value)]
        return arguments

    def environment(self) -> dict[str, str]:
        """The secret settings that are set, as environment variables (kept off a command line)."""
        return {d.env: d.format(getattr(self, d.name)) for d in worker_settings() if d.secret and getattr(self, d.name)}


def _derived(settings: WorkerSettings, name: str) -> bool:
    """True for a value __post_init__ computed from a default of None (the child computes it again)."""
    if name == "maintenance_interval":
        return settings.maintenance_interval == min(15.0, settings.lease / 2)
    if name == "prefetch":
        return settings.prefetch == max(0, PREFETCH_CLAIM_UP_TO - settings.concurrency)
    return False


def worker_settings() -> list[Setting]:
    """The definitions of WorkerSettings' fields, in their order."""
    return [Setting(name=f.name, **f.metadata["setting"]) for f in dataclasses.fields(WorkerSettings)]


# Settings of the `pgqueue work` command itself, not of one worker.
DSN = Setting(
    "dsn", help="PostgreSQL DSN. Default: $PGQUEUE_DSN, then $DATABASE_URL, else the embedded server.", secret=True
)
APP = Setting("app", short="-a", help="Module (or module:attribute) holding your Queue.")
WORKERS = Setting("workers", minimum=1, help="Worker processes.")
VERBOSE = Setting("verbose", short="-v", help="Log every job.")


def configured_dsn(explicit: str | None = None) -> str | None:
    """The DSN the user configured, or None when nothing is set."""
    if explicit:
        return normalize_dsn(explicit)
    for name in DSN_ENV_VARS:
        value = os.environ.get(name)
        if value:
            return normalize_dsn(value)
    return None


def resolve_dsn(explicit: str | None = None) -> str:
    """The DSN to use; starts (or reuses) the embedded server when none is configured."""
    dsn = configured_dsn(explicit)
    if dsn is not None:
        return dsn
    from pgqueue.store import embedded  # imported late: only the zero-set-up path needs it

    return embedded.server_dsn()


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+psycopg://) as well as libpq ones."""
    dsn = dsn.strip()
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql+asyncpg://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix) :]
    return dsn

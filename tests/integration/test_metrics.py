"""Prometheus metrics of real `pgqueue work` processes: scraped over HTTP during a run, checked against the jobs
table; bounded labels for hostile rows; the port in use; one depth reporter per cluster; the base install
without the extra."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgqueue import Queue
from pgqueue.worker.metrics import label
from tests.apps import observe_app

ROOT = Path(__file__).resolve().parents[2]
PGQUEUE = str(Path(sys.executable).parent / "pgqueue")
APP = "tests.apps.observe_app"
DECLARED_TASKS = {label(name) for name in observe_app.queue.tasks} | {"(unknown)"}
DECLARED_QUEUES = {"default", label("odd\tqueue"), "(other)"}


def free_port(count: int = 1) -> int:
    """A port from which `count` consecutive ports are free right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            base = probe.getsockname()[1]
        if base + count > 65535:
            continue
        try:
            for offset in range(count):
                with socket.socket() as s:
                    s.bind(("0.0.0.0", base + offset))
        except OSError:
            continue
        return base
    raise AssertionError("no free ports")


def start(dsn: str, *args: str, stderr: int = subprocess.PIPE) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PGQUEUE, "work", "--app", APP, *args],
        cwd=ROOT,
        env={**os.environ, "PGQUEUE_DSN": dsn},
        stdout=subprocess.DEVNULL,
        stderr=stderr,
        text=True,
    )


def scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """{sample name: {sorted labels: value}} from the endpoint."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode("utf-8")
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name][tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def try_scrape(port: int) -> dict[str, dict[tuple[tuple[str, str], ...], float]] | None:
    try:
        return scrape(port)
    except OSError:
        return None


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not met within {timeout} s")


def by_task(samples: dict, name: str) -> dict[str, float]:
    totals: dict[str, float] = defaultdict(float)
    for labels, value in samples.get(name, {}).items():
        totals[dict(labels)["task"]] += value
    return dict(totals)


def stop(process: subprocess.Popen[str]) -> str:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _out, err = process.communicate(timeout=60)
    return err or ""


@pytest.fixture
def jobs(dsn: str, db: psycopg.Connection):
    db.execute("CREATE TABLE observe_flags (flag text)")
    q = Queue(dsn)
    q.tasks = observe_app.queue.tasks
    yield q
    q.close()


def test_scrape_during_a_run_matches_the_jobs_table(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    for n in range(30):
        jobs.enqueue("ok", {"n": n})
    for _ in range(3):
        jobs.enqueue("flaky")
    for _ in range(2):
        jobs.enqueue("boom")
    jobs.enqueue(observe_app.odd.name)
    held = jobs.enqueue("hold", {"flag": "go"})
    # Hostile rows: an undeclared task name, huge and full of control characters, in an undeclared queue; and
    # many distinct undeclared names, which must not make many series.
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue) VALUES (repeat(E'\\x1b[2J\\n\"', 30000), repeat(E'q\\r\\n', 1000))"
    )
    db.execute(
        "INSERT INTO pgqueue.jobs (task, queue) SELECT 'nope-' || i, 'queue-' || i FROM generate_series(1, 200) i"
    )
    port = free_port()
    worker = start(dsn, "--metrics-port", str(port), "--metrics-interval", "1", "--concurrency", "4")
    try:
        # Mid-run: the held job is running, everything else done; the scrape shows it busy and the depth.
        def settled():
            samples = try_scrape(port)
            if (
                samples is None
                or db.execute(
                    "SELECT count(*) FROM pgqueue.jobs WHERE status NOT IN ('completed', 'failed') AND id <> %s",
                    (held,),
                ).fetchone()[0]
            ):
                return None
            depth = samples.get("pgqueue_queue_jobs", {})
            running = depth.get((("queue", "default"), ("state", "running")))
            return samples if running == 1 and samples["pgqueue_worker_busy_slots"][()] == 1 else None

        samples = wait_until(settled, what="all but the held job finished, and the depth refreshed")
        assert samples["pgqueue_depth_reporter"][()] == 1
        failed_in_table = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'failed'").fetchone()[0]
        depth_failed = sum(v for k, v in samples["pgqueue_queue_jobs"].items() if dict(k)["state"] == "failed")
        assert depth_failed == failed_in_table == 2 + 201

        # Against the table: per task, completed / failed jobs and attempts made.
        table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
        for task, done, failed_jobs, attempts in db.execute(
            "SELECT task, count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'), "
            "coalesce(sum(attempts) FILTER (WHERE status <> 'running'), 0) FROM pgqueue.jobs GROUP BY 1"
        ):
            totals = table[label(task) if task in observe_app.queue.tasks else "(unknown)"]
            for i, value in enumerate((done, failed_jobs, attempts)):
                totals[i] += value
        completed = by_task(samples, "pgqueue_jobs_completed_total")
        failed = by_task(samples, "pgqueue_jobs_failed_total")
        retried = by_task(samples, "pgqueue_jobs_retried_total")
        started = by_task(samples, "pgqueue_jobs_started_total")
        for task, (done, failed_jobs, attempts) in table.items():
            assert completed.get(task, 0) == done, task
            assert failed.get(task, 0) == failed_jobs, task
            # Every attempt started once (an unknown task's too: it fails at once); the held one is running.
            assert started.get(task, 0) == attempts + (1 if task == "hold" else 0), task
            assert retried.get(task, 0) == attempts - done - failed_jobs, task
        assert retried["flaky"] == 3 and retried["boom"] == 2 and failed["(unknown)"] == 201
        assert samples["pgqueue_job_run_seconds_count"][(("queue", "default"), ("task", "ok"))] == 30
        assert samples["pgqueue_job_wait_seconds_count"][(("queue", "default"), ("task", "ok"))] == 30

        # Bounded labels: only declared names (escaped as the format requires), whatever the rows hold.
        for series in samples.values():
            for labels in series:
                values = dict(labels)
                if "task" in values:
                    assert values["task"] in DECLARED_TASKS, values
                if "queue" in values:
                    assert values["queue"] in DECLARED_QUEUES, values
        assert len(samples["pgqueue_jobs_failed_total"]) <= len(DECLARED_TASKS) * len(DECLARED_QUEUES)

        db.execute("INSERT INTO observe_flags VALUES ('go')")
        wait_until(
            lambda: (
                (s := try_scrape(port))
                and s["pgqueue_jobs_completed_total"].get((("queue", "default"), ("task", "hold")))
            ),
            what="the held job counted as completed",
        )
    finally:
        err = stop(worker)
    assert worker.returncode == 0, err


def test_rescued_jobs_are_counted(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    # Two jobs of a vanished worker (leases long expired, starts recorded) and one whose worker is merely slow
    # (its lease still runs): only the two are rescued, and counted by the worker that rescued them.
    for lease in ("now() - interval '1 hour'", "now() - interval '1 hour'", "now() + interval '1 hour'"):
        db.execute(
            "INSERT INTO pgqueue.jobs (task, args, status, attempts, worker_id, started_at, lease_expires_at) "
            f"VALUES ('ok', '{{\"n\": 1}}', 'running', 1, 'gone:1:x', now() - interval '1 hour', {lease})"
        )
    port = free_port()
    worker = start(dsn, "--metrics-port", str(port), "--metrics-interval", "1", "--maintenance-interval", "0.5")
    try:
        samples = wait_until(
            lambda: (s := try_scrape(port)) and by_task(s, "pgqueue_jobs_completed_total").get("ok") == 2 and s,
            what="the two lost jobs rescued and run",
        )
        assert by_task(samples, "pgqueue_jobs_rescued_total") == {"ok": 2.0}
        still = db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'running'").fetchone()[0]
        assert still == 1  # the slow worker's job is left alone
    finally:
        err = stop(worker)
    assert worker.returncode == 0, err


def test_port_in_use_is_one_line(jobs: Queue, dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        worker = start(dsn, "--metrics-port", str(port), "--burst")
        _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 1
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert errors == [f"error: cannot serve metrics on port {port}: Address already in use"], err
    assert "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "65536", "http", "-1"])
def test_bad_metrics_port_is_a_usage_error(dsn: str, value: str) -> None:
    worker = start(dsn, "--metrics-port", value, "--burst")
    _out, err = worker.communicate(timeout=60)
    assert worker.returncode == 2, err
    assert "Traceback" not in err and "metrics-port" in err


def test_one_depth_reporter_per_cluster_and_one_port_per_process(jobs: Queue, dsn: str) -> None:
    """--workers 2: each child serves its own port; exactly one exports depth; when it is killed (SIGKILL),
    the other takes over."""
    port = free_port(2)
    supervisor = start(dsn, "--workers", "2", "--metrics-port", str(port), "--metrics-interval", "1")
    try:

        def reporters():
            scraped = [try_scrape(port), try_scrape(port + 1)]
            if None in scraped:
                return None
            flags = [s["pgqueue_depth_reporter"][()] for s in scraped]
            return (flags, scraped) if sorted(flags) == [0, 1] else None

        flags, scraped = wait_until(reporters, what="both children serving, one reporting depth")
        reporter = flags.index(1)
        assert "pgqueue_queue_jobs" not in scraped[1 - reporter]  # the other exports no depth at all
        pid = int(dict(next(iter(scraped[reporter]["pgqueue_worker_info"])))["worker"].split(":")[1])
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda: (s := try_scrape(port + 1 - reporter)) and s["pgqueue_depth_reporter"][()] == 1,
            what="the other child taking over the depth",
        )
    finally:
        err = stop(supervisor)
    assert "Traceback" not in err, err


def test_the_worker_runs_without_the_extras(jobs: Queue, dsn: str, db: psycopg.Connection) -> None:
    """With prometheus_client and opentelemetry unimportable, a worker runs jobs; asking for metrics is one line."""
    blocker = ROOT / "tests" / "apps" / "no_extras"
    jobs.enqueue("ok", {"n": 1})
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    run = subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "--app", APP, "--burst", "--log-format", "json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    assert db.execute("SELECT count(*) FROM pgqueue.jobs WHERE status = 'completed'").fetchone()[0] == 1
    run = subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "--app", APP, "--burst", "--metrics-port", "9464"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines()[-1].startswith("error: --metrics-port needs the metrics extra"), run.stderr
    assert "Traceback" not in run.stderr


def test_tracing_without_the_extra_is_one_line(dsn: str) -> None:
    blocker = ROOT / "tests" / "apps" / "no_extras"
    env = {**os.environ, "PGQUEUE_DSN": dsn, "PYTHONPATH": f"{blocker}{os.pathsep}{ROOT}"}
    run = subprocess.run(
        [sys.executable, "-m", "pgqueue", "work", "--app", APP, "--burst", "--tracing"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        "error: --tracing needs the tracing extra (pip install 'pgqueue[tracing]'): "
        "No module named 'opentelemetry' (blocked: a base install)"
    ], run.stderr

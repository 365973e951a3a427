"""Workers on separate hosts: each worker process runs in its own network namespace, with its own address, and
reaches PostgreSQL over a veth pair, as a worker on another machine would over the network. Together they drain
one queue exactly once; a host whose link goes dead mid-drain costs only the jobs it held, which the others take
over when their leases lapse.

Needs root and `ip netns` (iproute2); skipped, saying so, where either is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.store import migrate
from tests.apps.jobs_app import FAULT_RESULTS_DDL
from tests.faults.harness import APP, PGQUEUE, ROOT, PrivateServer, WorkerProcess, runs_per_job, statuses, wait_until
from tests.faults.test_fault_processes import make_queue

# Host i is A.B.i.2 and its gateway (the server's side of the veth pair) A.B.i.1, in the first 10.B/16 that no
# interface of the machine uses yet: a run killed before its clean-up leaves its links (and their addresses)
# behind, and a second link with the same address would send this run's packets into the dead one.
SUBNETS = tuple(f"10.{b}" for b in range(231, 255))
HOSTS = 3


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


def _netns_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "iproute2's ip command is missing"
    probe = f"pgq-probe-{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"ip netns add failed: {getattr(exc, 'stderr', b'') or exc}"
    _ip("netns", "del", probe)
    return None


@dataclass
class Host:
    """A network namespace with one veth link to the machine that runs PostgreSQL."""

    namespace: str
    link: str  # the server's end of the veth pair
    address: str  # the host's own address
    gateway: str  # the server's address as this host sees it

    def cut(self) -> None:
        """Take the link down: the host's packets go nowhere, as when a machine drops off the network."""
        _ip("link", "set", self.link, "down")

    def restore(self) -> None:
        _ip("link", "set", self.link, "up")


def _free_subnet() -> str:
    listed = subprocess.run(["ip", "-4", "-o", "addr", "show"], check=True, capture_output=True, text=True, timeout=30)
    used = {word.split("/")[0].rsplit(".", 2)[0] for word in listed.stdout.split() if word.count(".") == 3}
    for subnet in SUBNETS:
        if subnet not in used:
            return subnet
    pytest.skip(f"every subnet of {SUBNETS[0]}.0.0 to {SUBNETS[-1]}.0.0 is taken on this machine")


def _subnet_of(host: Host) -> str:
    return host.gateway.rsplit(".", 2)[0]


def _make_host(tag: str, subnet: str, index: int) -> Host:
    namespace, link, peer = f"pgq-{tag}-{index}", f"pq{tag}h{index}", f"pq{tag}n{index}"
    host = Host(namespace, link, f"{subnet}.{index}.2", f"{subnet}.{index}.1")
    _ip("netns", "add", namespace)
    _ip("link", "add", link, "type", "veth", "peer", "name", peer)
    _ip("link", "set", peer, "netns", namespace)
    _ip("addr", "add", f"{host.gateway}/24", "dev", link)
    _ip("link", "set", link, "up")
    _ip("-n", namespace, "addr", "add", f"{host.address}/24", "dev", peer)
    _ip("-n", namespace, "link", "set", peer, "up")
    _ip("-n", namespace, "link", "set", "lo", "up")
    return host


@pytest.fixture(scope="module")
def hosts() -> Iterator[list[Host]]:
    why = _netns_unavailable()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:4]
    subnet = _free_subnet()
    made: list[Host] = []
    try:
        for index in range(1, HOSTS + 1):
            made.append(_make_host(tag, subnet, index))
        yield made
    finally:
        for host in made:  # deleting the namespace deletes its end of the pair, and so the pair
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=30)
            subprocess.run(["ip", "link", "del", host.link], capture_output=True, timeout=30)


@pytest.fixture(scope="module")
def server(hosts: list[Host]) -> Iterator[PrivateServer]:
    """A private server listening on loopback and on the server's end of every host's link."""
    server = PrivateServer(listen=["127.0.0.1", *(host.gateway for host in hosts)])
    server.trust(f"{_subnet_of(hosts[0])}.0.0/16")
    try:
        server.start()
        yield server
    finally:
        server.destroy()


@pytest.fixture
def database(server: PrivateServer) -> Iterator[str]:
    name = f"hosts_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate.upgrade(server.dsn(name))
    with psycopg.connect(server.dsn(name), autocommit=True) as conn:
        conn.execute(FAULT_RESULTS_DDL)
    try:
        yield name
    finally:
        with psycopg.connect(server.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _start_on(host: Host, server: PrivateServer, database: str, log: Path, *args: str) -> WorkerProcess:
    """`pgqueue work` inside the host's namespace; it and its handlers reach the server over the host's link."""
    dsn = f"postgresql://postgres@{host.gateway}:{server.port}/{database}"
    env = {**os.environ, "PGQUEUE_RESULTS_DSN": dsn}
    env.pop("PGQUEUE_DSN", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["ip", "netns", "exec", host.namespace, PGQUEUE, "work", "--app", APP, "--dsn", dsn, *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return WorkerProcess(process, log)


@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[WorkerProcess]]:
    processes: list[WorkerProcess] = []
    try:
        yield processes
    finally:
        for worker in processes:
            if worker.alive():
                worker.process.kill()
                worker.process.wait(10)


def _client_addresses(conn: psycopg.Connection[Any], database: str) -> set[str]:
    rows = conn.execute(
        "SELECT DISTINCT host(client_addr) FROM pg_stat_activity WHERE datname = %s AND client_addr IS NOT NULL",
        (database,),
    ).fetchall()
    return {row[0] for row in rows}


def test_workers_on_three_hosts_drain_one_queue_exactly_once(
    hosts: list[Host], server: PrivateServer, database: str, started: list[WorkerProcess], tmp_path: Path
) -> None:
    dsn = server.dsn(database)
    for host in hosts:
        started.append(_start_on(host, server, database, tmp_path / f"{host.namespace}.log", "--concurrency", "4"))
    for worker in started:
        worker.wait_started()
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Every host is connected from its own address, none through loopback.
        wait_until(lambda: {h.address for h in hosts} <= _client_addresses(conn, database), what="every host connected")
        total = 3_000
        make_queue(dsn).enqueue_many([("fault_record", {"n": n, "seconds": 0.002}) for n in range(total)])
        wait_until(lambda: statuses(conn).get("completed") == total, timeout=120, what="all jobs completed")
        runs = runs_per_job(conn)
        per_process = dict(conn.execute("SELECT pid, count(*) FROM fault_results GROUP BY pid").fetchall())
    assert len(runs) == total and set(runs.values()) == {1}, "every job ran exactly once"
    # Each host took part (the worker's pid is the handler's pid: one process per host).
    assert set(per_process) == {worker.pid for worker in started}, (per_process, [w.output() for w in started])
    assert all(count > 0 for count in per_process.values())


def test_a_host_cut_off_mid_drain_costs_only_its_jobs(
    hosts: list[Host],
    server: PrivateServer,
    database: str,
    started: list[WorkerProcess],
    tmp_path: Path,
    figures: dict[str, Any],
) -> None:
    dsn = server.dsn(database)
    lease = 4
    args = ("--concurrency", "4", "--lease", str(lease), "--poll-interval", "1")
    for host in hosts:
        started.append(_start_on(host, server, database, tmp_path / f"{host.namespace}.log", *args))
    for worker in started:
        worker.wait_started()
    total = 600
    with psycopg.connect(dsn, autocommit=True) as conn:
        make_queue(dsn).enqueue_many([("fault_record", {"n": n, "seconds": 0.05}) for n in range(total)])
        cut_off = hosts[0]
        victim = started[0]
        wait_until(
            lambda: conn.execute("SELECT count(*) FROM fault_results WHERE pid = %s", (victim.pid,)).fetchone()[0] > 5,
            what="the first host is working",
        )
        cut_off.cut()
        try:
            wait_until(lambda: statuses(conn).get("completed") == total, timeout=180, what="all jobs completed")
        finally:
            victim.process.kill()  # it would hang on its dead link until its own timeouts; it is gone for good
            victim.process.wait(10)
            cut_off.restore()
        runs = runs_per_job(conn)
        lost = sum(
            1
            for (errors,) in conn.execute("SELECT errors FROM pgqueue.jobs")
            if any(error["error"].startswith("worker lost") for error in errors)
        )
    # Nothing lost; a job ran twice only if the cut host finished its handler but could not write the ack.
    assert len(runs) == total
    assert all(count in (1, 2) for count in runs.values())
    twice = sum(1 for count in runs.values() if count == 2)
    assert twice <= lost, (twice, lost)
    others = {worker.pid for worker in started[1:]}
    with psycopg.connect(dsn, autocommit=True) as conn:
        took_over = conn.execute("SELECT count(*) FROM fault_results WHERE pid = ANY(%s)", (list(others),)).fetchone()[
            0
        ]
    assert took_over > 0
    figures.update(
        enqueued=total,
        completed=total,
        lost=0,
        **{"ran twice": twice},
        notes=f"{HOSTS} hosts (network namespaces); one cut off mid-drain: {lost} of its jobs rescued by the others",
    )

"""A throw-away PostgreSQL server with pg_stat_statements loaded, to count an idle worker's statements exactly.

Made from the same server binaries as the server under test when they are on this machine (Debian keeps
them in /usr/lib/postgresql/<major>/bin); as root it runs as the `postgres` user, as initdb requires.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def _bindir(major: str) -> Path | None:
    candidates = [f"/usr/lib/postgresql/{major}/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for folder in candidates:
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateServer:
    def __init__(self, major: str) -> None:
        self.bindir = _bindir(major)
        self.folder: Path | None = None
        self.port = 0
        self._as: list[str] = []

    def start(self) -> str | None:
        """The server's DSN, or None when no server can be made here."""
        if self.bindir is None:
            return None
        self.folder = Path(tempfile.mkdtemp(prefix="pgqueue-bench-pg-"))
        if os.geteuid() == 0:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                return None
            os.chown(self.folder, user.pw_uid, user.pw_gid)
            self._as = ["runuser", "-u", "postgres", "--"]
        data = self.folder / "data"
        self.port = _free_port()
        options = (
            f"-c port={self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.folder} "
            "-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
        )
        try:
            self._run("initdb", "-D", str(data), "-U", "postgres", "-A", "trust", "--no-sync")
            self._run("pg_ctl", "-D", str(data), "-l", str(self.folder / "log"), "-o", options, "-w", "start")
        except (OSError, subprocess.CalledProcessError):
            self.stop()
            return None
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        assert self.bindir is not None
        subprocess.run([*self._as, str(self.bindir / tool), *args], check=True, capture_output=True, cwd="/")

    def stop(self) -> None:
        if self.folder is None:
            return
        if (self.folder / "data" / "postmaster.pid").exists():
            with contextlib.suppress(OSError, subprocess.CalledProcessError):
                self._run("pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder = None

"""A throwaway PostgreSQL server for the test suite, on 127.0.0.1.

Uses Debian's server binaries (``apt-get install postgresql``; `.ci/run` does
this). initdb refuses to run as root, so as root the server runs as the
``postgres`` system user. Each test gets a fresh database.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from pathlib import Path


def find_bindir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return Path(candidates[0]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self, bindir: Path, workdir: Path) -> None:
        self.bindir = bindir
        self.workdir = workdir
        self.datadir = workdir / "data"
        self.port = _free_port()
        self._run_as: list[str] = []
        self._counter = 0
        if os.geteuid() == 0:
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError as e:
                raise RuntimeError("running as root needs the 'postgres' system user") from e
            self._run_as = ["runuser", "-u", "postgres", "--"]
            os.chown(workdir, pw.pw_uid, pw.pw_gid)

    def _pg(self, tool: str, *args: str) -> None:
        cmd = [*self._run_as, str(self.bindir / tool), *args]
        subprocess.run(cmd, check=True, capture_output=True, cwd=self.workdir)

    def start(self) -> None:
        self._pg("initdb", "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--no-sync")
        opts = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.workdir} -c fsync=off"
        self._pg(
            "pg_ctl", "-D", str(self.datadir), "-o", opts, "-l", str(self.workdir / "log"), "-w", "-t", "60", "start"
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("PostgreSQL did not start; see " + str(self.workdir / "log"))

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._pg("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        import psycopg

        self._counter += 1
        name = f"memo_test_{self._counter}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

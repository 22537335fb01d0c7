"""A throw-away PostgreSQL server on loopback for tests: initdb, pg_ctl start, stop, remove.

Uses the server binaries of the machine (Debian's ``postgresql`` package puts them in
``/usr/lib/postgresql/<version>/bin``). PostgreSQL refuses to run as root: as root the
cluster belongs to the ``postgres`` account and its directory lies outside pytest's
private (0700) temp tree.
"""

from __future__ import annotations

import getpass
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from helpers.servers import free_port

NOT_FOUND = (
    "PostgreSQL server binaries not found (Debian package postgresql); .ci/run installs them"
)


def server_bin_dir() -> Path | None:
    """Where ``initdb`` and ``pg_ctl`` are: on PATH, or Debian's versioned directory."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    return found[-1].parent if found else None


@dataclass(frozen=True)
class Postgres:
    """A running server; ``url(db)`` is the SQLAlchemy URL of one of its databases."""

    port: int
    user: str

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """Create the database ``name``; return its URL."""
        import psycopg2

        connection = psycopg2.connect(self.url("postgres"), connect_timeout=30)
        try:
            connection.autocommit = True  # CREATE DATABASE cannot run in a transaction
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()
        return self.url(name)


@contextmanager
def postgres_server(bin_dir: Path) -> Iterator[Postgres]:
    """initdb into a fresh directory, start on a free loopback port (trust auth), yield,
    then ``pg_ctl stop -m fast`` and remove the directory."""
    root = Path(tempfile.mkdtemp(prefix="visiontune-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # initdb and postgres refuse root: run them as the postgres account
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            raise RuntimeError("as root, PostgreSQL needs the postgres account") from None
        os.chown(root, account.pw_uid, account.pw_gid)
        as_postgres = ["runuser", "-u", "postgres", "--"]
    user = "postgres" if as_postgres else getpass.getuser()
    data, log = root / "data", root / "server.log"
    pg_ctl = [*as_postgres, str(bin_dir / "pg_ctl"), "-D", str(data)]
    initdb = [*as_postgres, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust"]
    try:
        subprocess.run([*initdb, "--no-sync"], check=True, capture_output=True, timeout=120)
        port = free_port()
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        started = subprocess.run(
            [*pg_ctl, "-l", str(log), "-o", options, "-w", "-t", "60", "start"],
            capture_output=True,
            text=True,
            timeout=90,
        )
        if started.returncode != 0:
            detail = log.read_text() if log.exists() else started.stderr
            raise RuntimeError(f"PostgreSQL did not start:\n{started.stdout}{detail}")
        try:
            yield Postgres(port, user)
        finally:
            subprocess.run(
                [*pg_ctl, "-m", "fast", "-w", "-t", "60", "stop"], capture_output=True, timeout=90
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

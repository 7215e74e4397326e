"""A private PostgreSQL server for the tests: ``NITRONB_TEST_DATABASE_URL`` when set (a role that
may create databases), else a throwaway cluster started from the installed binaries
(``/usr/lib/postgresql/*/bin``: the Debian/Ubuntu package ``postgresql``), listening only on a
unix socket in a temporary folder. Each test then gets a database of its own."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

ENV_URL = "NITRONB_TEST_DATABASE_URL"


class Unavailable(Exception):
    """No PostgreSQL for the tests; the message says why and what to install."""


def _bindir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    explicit = shutil.which("initdb")
    if explicit:
        return Path(explicit).parent
    if not found:
        raise Unavailable(f"no PostgreSQL server: set {ENV_URL}, or install PostgreSQL's "
                          "binaries (apt-get install postgresql) for a private test cluster")
    return Path(found[-1]).parent


class Cluster:
    """A cluster in a temporary folder, run as an unprivileged user when this is root
    (``initdb`` refuses root): the user ``postgres`` of the Debian package, else ``nobody``."""

    def __init__(self) -> None:
        self.bindir = _bindir()
        self.root = Path(tempfile.mkdtemp(prefix="nitronb-pg-"))
        self.data, self.socket = self.root / "data", self.root
        self.user = None
        if os.geteuid() == 0:
            for name in ("postgres", "nobody"):
                try:
                    self.user = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self.user is None:
                raise Unavailable("running as root and no unprivileged user (postgres) to run "
                                  "PostgreSQL as")
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self.url = f"postgresql://postgres@/postgres?host={self.socket}"

    def _run(self, *argv: str) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if self.user is not None:
            command = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                       "--init-groups", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if done.returncode:
            raise Unavailable(f"{argv[0]} failed: {(done.stderr or done.stdout).strip()[-800:]}")

    def start(self) -> "Cluster":
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--locale=C")
        return self.serve()

    def halt(self) -> None:
        """Stop the server, keeping its data (:meth:`serve` starts it again)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def serve(self) -> "Cluster":
        """Start the server on the cluster's data."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                  "-t", "60", "-o",
                  f"-k {self.socket} -c listen_addresses='' -c fsync=off "
                  "-c synchronous_commit=off -c full_page_writes=off -c max_connections=300",
                  "start")
        return self

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        except Unavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def admin_url() -> tuple[str, Cluster | None]:
    """The server's admin URL, and the cluster started for it (None: ``ENV_URL`` named one)."""
    if os.environ.get(ENV_URL):
        return os.environ[ENV_URL], None
    cluster = Cluster()
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    return cluster.url, cluster


def create_database(admin: str) -> str:
    """A new empty database on the server of ``admin``; return its URL."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from nitronb.ccm.database import create_engine

    name = f"nitronb_test_{uuid.uuid4().hex[:12]}"
    engine = create_engine(admin).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.engine.dispose()
    return make_url(admin).set(database=name).render_as_string(hide_password=False)


def drop_database(admin: str, url: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from nitronb.ccm.database import create_engine

    engine = create_engine(admin).execution_options(isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)'))
    engine.engine.dispose()

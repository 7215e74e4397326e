"""A real manager server in a temporary workspace, on a free loopback port, on the database that
``--database`` names: SQLite in the workspace (default), or with ``--database postgresql`` a new
PostgreSQL database per test (``$NITRONB_DATABASE_URL`` is set for the test, so that managers,
services and stores opened by it all use it)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
PARTIES = ("data-owner", "output-owner", "app-owner", "admin")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ManagerProcess:
    """``python -m nitronb.ccm.server`` with the test-only verifier; restartable."""

    def __init__(self, workspace: Path, verifier: str | None = "ccm_fake_nsm:make",
                 args: tuple[str, ...] = ()) -> None:
        self.workspace = workspace
        self.args = args
        self.verifier = verifier
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = workspace / f"manager-{self.port}.log"

    def start(self) -> None:
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting for it to answer."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nitronb.ccm.server", "--workspace", str(self.workspace),
                 "--host", "127.0.0.1", "--port", str(self.port),
                 *(["--verifier", self.verifier] if self.verifier else []), *self.args],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))

    def wait_ready(self) -> None:
        """Wait until the process answers its health check (30 s at most)."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the manager exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/v1/sys/health", timeout=1).ok:
                    return
            except (requests.ConnectionError, requests.Timeout):
                time.sleep(0.05)
        raise RuntimeError("the manager did not answer within 30 s")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def store(self):
        """A :class:`~nitronb.ccm.store.Store` on this manager's database (close it after)."""
        from nitronb.ccm.database import database_url
        from nitronb.ccm.store import Store

        return Store(database_url(folder=self.workspace / "ccm"))

    def sql(self, statement: str, params: dict | None = None) -> list:
        """Run SQL (``:name`` parameters) on this manager's database, as an intruder with
        access to it would; return the rows."""
        store = self.store()
        try:
            with store.transaction():
                return store.execute(statement, params)
        finally:
            store.close()

    @property
    def tokens(self) -> dict[str, str]:
        return json.loads((self.workspace / "ccm" / "tokens.json").read_text())

    def client(self, party: str):
        from nitronb.ccm import CCMClient

        return CCMClient(self.url, self.tokens[party])


@pytest.fixture(autouse=True)
def manager_database(request, monkeypatch) -> str | None:
    """The database of the test's managers: None (SQLite in each workspace), or with
    ``--database postgresql`` a new PostgreSQL database named by ``$NITRONB_DATABASE_URL``."""
    from nitronb.ccm.database import ENV_URL

    if request.config.getoption("--database") != "postgresql":
        monkeypatch.delenv(ENV_URL, raising=False)
        return None
    url = request.getfixturevalue("postgres_url")
    monkeypatch.setenv(ENV_URL, url)
    return url


def _backends(config) -> list[str]:
    return (["postgresql"] if config.getoption("--database") == "postgresql"
            else ["sqlite", "postgresql"])


def pytest_generate_tests(metafunc) -> None:
    if "store_url" in metafunc.fixturenames:
        metafunc.parametrize("store_url", _backends(metafunc.config), indirect=True)


@pytest.fixture
def store_url(request, tmp_path) -> str:
    """A new, empty database for store-level tests: SQLite and PostgreSQL (only PostgreSQL
    with ``--database postgresql``; skipped when no PostgreSQL is available)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ccm.sqlite3'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def manager(tmp_path):
    """A manager whose attestation verifier is the test-only one of ``ccm_fake_nsm``."""
    process = ManagerProcess(tmp_path / "ws")
    process.workspace.mkdir()
    try:
        process.start()
        yield process
    finally:
        process.stop()


@pytest.fixture
def nitro_manager(tmp_path):
    """A manager with its default verifier (trusting ``<workspace>/nsm/root.pem``)."""
    process = ManagerProcess(tmp_path / "ws", verifier=None)
    process.workspace.mkdir()
    try:
        process.start()
        yield process
    finally:
        process.stop()

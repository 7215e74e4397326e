"""A real manager server in a temporary workspace, on a free loopback port."""

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

    def __init__(self, workspace: Path, verifier: str | None = "ccm_fake_nsm:make") -> None:
        self.workspace = workspace
        self.verifier = verifier
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.log = workspace / "manager.log"

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "nitronb.ccm.server", "--workspace", str(self.workspace),
                 "--host", "127.0.0.1", "--port", str(self.port),
                 *(["--verifier", self.verifier] if self.verifier else [])],
                stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(ROOT))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the manager exited: {self.log.read_text()[-2000:]}")
            try:
                if requests.get(self.url + "/v1/sys/health", timeout=1).ok:
                    return
            except requests.ConnectionError:
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

    @property
    def tokens(self) -> dict[str, str]:
        return json.loads((self.workspace / "ccm" / "tokens.json").read_text())

    def client(self, party: str):
        from nitronb.ccm import CCMClient

        return CCMClient(self.url, self.tokens[party])


@pytest.fixture
def manager(tmp_path):
    """A manager whose attestation verifier is the test-only one of ``ccm_fake_nsm``."""
    process = ManagerProcess(tmp_path / "ws")
    process.workspace.mkdir()
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
def nitro_manager(tmp_path):
    """A manager with its default verifier (trusting ``<workspace>/nsm/root.pem``)."""
    process = ManagerProcess(tmp_path / "ws", verifier=None)
    process.workspace.mkdir()
    process.start()
    try:
        yield process
    finally:
        process.stop()

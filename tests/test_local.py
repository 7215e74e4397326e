"""The local stack: start, status, stop, ports, state and logs — and the walk-through a new user runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from nitronb.local import stack as local
from nitronb.errors import LocalStackError

ONLY_S3 = {"s3": local.SERVICES["s3"]}


@pytest.fixture
def s3_only(monkeypatch, tmp_path):
    """A workspace whose stack has the S3 endpoint only; stopped at the end whatever happens."""
    monkeypatch.setattr(local, "SERVICES", dict(ONLY_S3))
    workspace = tmp_path / "ws"
    yield workspace
    local.down(workspace)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_session_stack_runs_and_records_its_state(local_stack):
    report = local.status()
    assert report["s3"]["state"] == "running"
    assert report["s3"]["url"].startswith("http://127.0.0.1:")
    assert local.url("s3") == report["s3"]["url"]
    state = json.loads((local_stack.workspace / "local" / "state.json").read_text())
    assert state["services"]["s3"]["pid"] == report["s3"]["pid"]
    assert Path(report["s3"]["log"]).is_file()
    creds = local_stack.workspace / "local" / "s3-credentials.json"
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    health = requests.get(report["s3"]["url"] + "/_nitronb/health", timeout=10)
    assert health.json() == {"status": "ok"}


def test_up_is_idempotent_and_ensure_up_keeps_what_runs(local_stack):
    before = local.status()
    assert local.up() == before
    assert local.ensure_up() == before


def test_down_stops_everything_and_a_restart_reuses_the_port(s3_only):
    first = local.up(s3_only)["s3"]
    assert first["state"] == "running"
    stopped = local.down(s3_only)
    assert stopped["s3"]["state"] == "stopped"
    assert not _alive(first["pid"])
    assert local.down(s3_only)["s3"]["state"] == "stopped"  # idempotent
    with pytest.raises(LocalStackError, match="nitronb local up"):
        local.url("s3", s3_only)
    again = local.up(s3_only)["s3"]
    assert again["port"] == first["port"]
    assert again["pid"] != first["pid"]


def test_the_port_can_be_configured(s3_only, monkeypatch):
    port = _free_port()
    monkeypatch.setenv("NITRONB_S3_PORT", str(port))
    assert local.up(s3_only)["s3"]["url"] == f"http://127.0.0.1:{port}"


def test_a_killed_service_is_seen_as_stopped_and_restarted(s3_only):
    first = local.up(s3_only)["s3"]
    os.killpg(first["pid"], 9)
    deadline = time.monotonic() + 10
    while local.status(s3_only)["s3"]["state"] != "stopped" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert local.status(s3_only)["s3"]["state"] == "stopped"
    assert local.ensure_up(s3_only)["s3"]["state"] == "running"


def test_a_service_that_fails_to_start_names_its_log(monkeypatch, tmp_path):
    broken = local.Service("broken", "json.tool", "/health", "NITRONB_BROKEN_PORT")
    monkeypatch.setattr(local, "SERVICES", {"broken": broken})
    with pytest.raises(LocalStackError, match=r"broken\.log"):
        local.up(tmp_path)
    assert local.status(tmp_path)["broken"]["state"] == "stopped"


def test_services_whose_module_is_missing_are_skipped(monkeypatch, tmp_path):
    absent = local.Service("absent", "nitronb.no_such_module", "/", "NITRONB_ABSENT_PORT")
    monkeypatch.setattr(local, "SERVICES", {"absent": absent})
    assert local.status(tmp_path) == {}
    assert local.up(tmp_path) == {}


def _alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_the_walk_through_a_new_user_runs(tmp_path):
    """local up → encrypt → upload → presign → curl; expiry; presigned PUT; local down."""
    env = {**os.environ, "NITRONB_WORKSPACE": str(tmp_path / "ws")}

    def nitronb(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "nitronb", *args], env=env, cwd=tmp_path,
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def curl(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["curl", "-sS", *args], capture_output=True, cwd=tmp_path)

    from nitronb import sample_path

    try:
        nitronb("local", "up")
        nitronb("keygen", "-o", "input.key")
        nitronb("aes", "enc", "-K", "input.key", "-in", str(sample_path()), "-out", "in.enc")
        uri = nitronb("upload", "--profile", "local", "in.enc", "s3://nitronb/input").strip()
        assert uri == "s3://nitronb/input/in.enc"
        signed = json.loads(nitronb("presign", "local", "download", "s3://nitronb/input",
                                    "in.enc", "60", "--json"))
        assert set(signed) == {"url", "location", "query_string"}
        got = curl("-f", signed["url"])
        assert got.returncode == 0
        assert got.stdout == (tmp_path / "in.enc").read_bytes()
        short = json.loads(nitronb("presign", "local", "download", "s3://nitronb/input",
                                   "in.enc", "2", "--json"))
        time.sleep(3)
        late = curl("-o", "/dev/null", "-w", "%{http_code}", short["url"])
        assert late.stdout == b"403"
        put = json.loads(nitronb("presign", "local", "upload", "s3://nitronb/output",
                                 "out.enc", "60", "--json"))
        assert curl("-f", "-T", "in.enc", put["url"]).returncode == 0
        nitronb("download", "s3://nitronb/output/out.enc", "back.enc")
        assert (tmp_path / "back.enc").read_bytes() == (tmp_path / "in.enc").read_bytes()
        running = json.loads(nitronb("local", "status", "--json"))
        pids = [entry["pid"] for entry in running.values()]
        assert running["s3"]["state"] == "running"
    finally:
        nitronb("local", "down")
    report = json.loads(nitronb("local", "status", "--json"))
    assert all(entry["state"] == "stopped" for entry in report.values())
    assert not any(_alive(pid) for pid in pids)


_STUB = r'''
import http.server, os, signal, sys, time
name, other, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
def on_term(sig, frame):
    open("term-" + name, "w").close()
    if other == "-":
        return  # keeps serving
    deadline = time.monotonic() + 60
    while not os.path.exists("term-" + other) and time.monotonic() < deadline:
        time.sleep(0.05)
    open("clean-" + name, "w").close()
    os._exit(0)
signal.signal(signal.SIGTERM, on_term)
class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", port), Health).serve_forever()
'''


class _Stub(local.Service):
    """A service that, on SIGTERM, waits for ``other``'s SIGTERM before it exits (``-``:
    never exits)."""

    def __init__(self, name: str, other: str) -> None:
        super().__init__(name, "http.server", "/", f"NITRONB_{name.upper()}_PORT")
        object.__setattr__(self, "other", other)

    def argv(self, workspace: Path, port: int) -> list[str]:
        return [sys.executable, "-c", _STUB, "http.server", self.name, self.other, str(port)]


def test_down_sends_sigterm_to_every_service_before_waiting(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "SERVICES", {"one": _Stub("one", "two"),
                                            "two": _Stub("two", "one")})
    ws = tmp_path / "ws"
    assert {s["state"] for s in local.up(ws).values()} == {"running"}
    report = local.down(ws)
    assert {s["state"] for s in report.values()} == {"stopped"}
    assert not any("killed" in s for s in report.values())
    assert (ws / "clean-one").exists() and (ws / "clean-two").exists()


def test_down_kills_a_service_past_its_grace_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(local, "SERVICES", {"stubborn": _Stub("stubborn", "-")})
    monkeypatch.setattr(local, "STOP_MARGIN", 0.5)
    monkeypatch.setenv("NITRONB_HTTP_SHUTDOWN_TIMEOUT", "0.5")
    ws = tmp_path / "ws"
    pid = local.up(ws)["stubborn"]["pid"]
    state = json.loads((ws / "local" / "state.json").read_text(encoding="utf-8"))
    assert state["services"]["stubborn"]["shutdown_timeout"] == 0.5
    monkeypatch.delenv("NITRONB_HTTP_SHUTDOWN_TIMEOUT")  # down uses the grace it started with
    report = local.down(ws)["stubborn"]
    assert report["state"] == "stopped" and not _alive(pid)
    assert (ws / "term-stubborn").exists()
    assert "killed" in report["killed"] and "1 s after SIGTERM" in report["killed"]


class _Renamed(_Stub):
    """The stub service under another (installed) module name, as a later nitronb names it."""

    def __init__(self, name: str, other: str) -> None:
        super().__init__(name, other)
        object.__setattr__(self, "module", "json.tool")

    def argv(self, workspace: Path, port: int) -> list[str]:
        return [sys.executable, "-c", _STUB, self.module, self.name, self.other, str(port)]


def test_a_service_started_under_a_module_since_renamed_is_replaced_and_stopped(monkeypatch,
                                                                                 tmp_path):
    """A stack an earlier nitronb started runs its modules under their old names: ``up``
    replaces such a service, and ``down`` stops it rather than leaving it running."""
    monkeypatch.setenv("NITRONB_HTTP_SHUTDOWN_TIMEOUT", "0.5")
    monkeypatch.setattr(local, "STOP_MARGIN", 0.5)
    ws = tmp_path / "ws"
    state_path = ws / "local" / "state.json"
    renamed = _Renamed("one", "-")
    started = []

    def start_as_before() -> int:
        """The stub started, then its state rewritten as an earlier nitronb recorded it."""
        monkeypatch.setattr(local, "SERVICES", {"one": _Stub("one", "-")})
        started.append(local.up(ws)["one"]["pid"])
        state = json.loads(state_path.read_text(encoding="utf-8"))
        state["services"]["one"]["argv"] = [sys.executable, "-m", "http.server"]
        state_path.write_text(json.dumps(state), encoding="utf-8")
        monkeypatch.setattr(local, "SERVICES", {"one": renamed})
        return started[-1]

    try:
        old = start_as_before()
        assert local.status(ws)["one"]["state"] == "unhealthy" and _alive(old)
        new = local.up(ws)["one"]["pid"]
        started.append(new)
        assert new != old and not _alive(old)
        local.down(ws)
        assert not _alive(new)

        old = start_as_before()
        assert local.down(ws)["one"]["state"] == "stopped" and not _alive(old)
    finally:
        local.down(ws)
        for pid in started:
            if _alive(pid):
                os.kill(pid, 9)

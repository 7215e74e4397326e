"""An enclave outlives a node agent killed with SIGKILL: after ``nitronb local up`` the new node
agent knows how it ended, its record is not left running, its image copy is gone, and ``nitronb
run`` (or the runner) reports what really happened.

The real local stack runs the walk-through's app on the process backend (bubblewrap), changed
to wait, before its analysis, until a loopback port of the test's accepts connections: the test
holds the enclave there while it kills the node agent.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

#: how long the test waits for what it waits on (the run itself, a process to end)
PATIENCE = 300.0
EXPECTED = {"count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}


class Gate:
    """A loopback port that refuses connections until :meth:`open`, and again after :meth:`close`."""

    def __init__(self) -> None:
        self._sock = self._bound(0)
        self.port = self._sock.getsockname()[1]

    @staticmethod
    def _bound(port: int) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", port))
        return sock

    def open(self) -> None:
        self._sock.listen(16)

    def close(self) -> None:
        self._sock.close()
        self._sock = self._bound(self.port)


def _gated_app(tmp: Path, port: int) -> Path:
    from nitronb.enclave.image import default_app_dir

    app = tmp / "gated-app"
    shutil.copytree(default_app_dir(), app)
    describe = app / "describe.py"
    wait = ("import socket as _socket, time as _time\n"
            "while True:\n"
            "    try:\n"
            f"        _socket.create_connection(('127.0.0.1', {port}), timeout=5).close()\n"
            "        break\n"
            "    except OSError:\n"
            "        _time.sleep(0.1)\n")
    text = describe.read_text(encoding="utf-8")
    head, _, body = text.partition("\nimport ")
    describe.write_text(f"{head}\n{wait}import {body}", encoding="utf-8")
    return app


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The local stack, the walk-through approved with the gated app, and the gate."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps
    from nitronb.enclave.sandbox import find_bwrap

    if find_bwrap() is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap); CI installs it")
    tmp = tmp_path_factory.mktemp("agent-restart")
    gate = Gate()
    workspace = tmp / "ws"
    try:
        local.up(workspace)
        wt = steps.through_approval(workspace, backend="process",
                                    app_dir=_gated_app(tmp, gate.port))
        yield wt, gate
    finally:
        local.down(workspace)


def _until(condition, what: str):
    deadline = time.monotonic() + PATIENCE
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} did not happen within {PATIENCE:.0f} s")


def _enclaves(wt) -> set[str]:
    folder = wt.workspace / "node-agent" / "enclaves"
    return {p.name for p in folder.iterdir()} if folder.exists() else set()


def _fresh_output(wt) -> None:
    """The stack up (an earlier test may have left the node agent down), no result stored."""
    from nitronb.local import stack as local
    from nitronb.s3 import client as storage

    local.up(wt.workspace)
    storage.delete_object(wt.state()["output_uri"], workspace=wt.workspace)


def _cli_run(wt) -> subprocess.Popen:
    state = wt.state()
    env = {**os.environ, "NITRONB_WORKSPACE": str(wt.workspace)}
    return subprocess.Popen([sys.executable, "-m", "nitronb", "run", "--appconfig-id",
                             state["appconfig_id"], "--backend", "process",
                             state["image_reference"]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _new_enclave(wt, before: set[str], run=None) -> str:
    """The enclave launched since ``before``, once its app waits at the gate (``run``: the
    ``nitronb run`` process, which must not have ended)."""
    def launched():
        if run is not None and run.poll() is not None:
            raise AssertionError(f"nitronb run ended before the app started: "
                                 f"{run.communicate()[1]}")
        return next(iter(_enclaves(wt) - before), None)

    enclave_id = _until(launched, "a launch")
    log = wt.workspace / "node-agent" / "enclaves" / enclave_id / "enclave.log"
    _until(lambda: log.exists() and "running describe.py" in log.read_text(encoding="utf-8"),
           "the app's start")
    return enclave_id


def _kill_node_agent(wt) -> None:
    from nitronb.local import stack as local

    pid = local.status(wt.workspace)["node-agent"]["pid"]
    os.kill(pid, signal.SIGKILL)
    _until(lambda: local.status(wt.workspace)["node-agent"]["state"] == "stopped",
           "the node agent's end")
    local._reaped(pid)


def _restart_node_agent(wt) -> None:
    from nitronb.local import stack as local

    assert local.up(wt.workspace)["node-agent"]["state"] == "running"


def _processes(enclave_id: str) -> dict[int, str]:
    """The processes of an enclave (those whose command line or environment name it)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if enclave_id.encode() in cmdline or f"NITRONB_ENCLAVE_ID={enclave_id}".encode() in environ:
            found[int(entry.name)] = cmdline.replace(b"\0", b" ").decode("utf-8", "replace")
    return found


def _record(wt, enclave_id: str) -> dict:
    folder = wt.workspace / "node-agent" / "enclaves" / enclave_id
    return json.loads((folder / "enclave.json").read_text(encoding="utf-8"))


def _ask_agent(wt, enclave_id: str) -> dict:
    import requests

    from nitronb.local import stack as local
    from nitronb.enclave.node_agent import operator_token

    reply = requests.get(f"{local.url('node-agent', wt.workspace)}/v1/enclaves/{enclave_id}",
                         headers={"Authorization": f"Bearer {operator_token(wt.workspace)}"},
                         timeout=30)
    reply.raise_for_status()
    return reply.json()


def _check_result(wt, tmp: Path) -> None:
    """The result the enclave uploaded decrypts with the output key to the expected summary."""
    from nitronb.s3 import transfers
    from nitronb.keys import read_key_file
    from nitronb.results import decrypt_run_result, describe_summary

    state = wt.state()
    target = transfers.download_file(state["output_uri"], tmp / "result.enc",
                                   workspace=wt.workspace, progress=False)
    result = decrypt_run_result(read_key_file(state["output_key"]), target)
    assert result.ok
    assert list(describe_summary(result.text).values()) == [EXPECTED]


def _assert_ended(wt, enclave_id: str, code: int | None, state: str = "exited") -> None:
    folder = wt.workspace / "node-agent" / "enclaves" / enclave_id
    record = _until(lambda: (r := _record(wt, enclave_id))["state"] != "running" and r,
                    "the recorded end")
    assert (record["state"], record["exit_code"]) == (state, code)
    assert record["ended_at"] is not None
    assert not (folder / "private").exists(), "the enclave's image copy must be removed"
    assert not [p for p in folder.rglob("*") if p.name == "credentials.bin"]
    assert _processes(enclave_id) == {}


def test_an_enclave_that_succeeds_while_the_node_agent_is_down_is_reported_a_success(
        stack, tmp_path):
    wt, gate = stack
    _fresh_output(wt)
    before = _enclaves(wt)
    run = _cli_run(wt)
    enclave_id = _new_enclave(wt, before, run)
    _kill_node_agent(wt)
    assert _processes(enclave_id), "the enclave must outlive its node agent"

    gate.open()
    try:
        _until(lambda: not _processes(enclave_id), "the enclave's end")
    finally:
        gate.close()
    assert _record(wt, enclave_id)["state"] == "running"  # no node agent recorded the end yet
    _restart_node_agent(wt)

    out, err = run.communicate(timeout=PATIENCE)
    assert run.returncode == 0, err
    assert f"enclave {enclave_id} (process) finished in" in err
    assert "the node agent does not answer" in err
    assert "credentials wiped" in err
    _assert_ended(wt, enclave_id, 0)
    assert _ask_agent(wt, enclave_id)["exit_code"] == 0
    _check_result(wt, tmp_path)


def test_an_enclave_still_running_when_the_node_agent_comes_back_is_adopted(stack, tmp_path):
    from nitronb.enclave.runner import run_enclave

    wt, gate = stack
    _fresh_output(wt)
    state = wt.state()
    before = _enclaves(wt)
    outcome: dict = {}
    runner = threading.Thread(target=lambda: outcome.update(run=run_enclave(
        state["image_reference"], state["appconfig_id"], backend="process",
        workspace=wt.workspace, timeout=PATIENCE)), daemon=True)
    runner.start()
    enclave_id = _new_enclave(wt, before)
    _kill_node_agent(wt)
    _restart_node_agent(wt)
    assert _until(lambda: _ask_agent(wt, enclave_id)["state"] == "running" and
                  _record(wt, enclave_id)["state"] == "running", "the adoption")
    assert _processes(enclave_id)

    gate.open()
    try:
        runner.join(PATIENCE)
    finally:
        gate.close()
    result = outcome["run"]
    assert result.ok and result.enclave_id == enclave_id, result.log
    assert "credentials wiped" in result.log
    _assert_ended(wt, enclave_id, 0)
    assert _ask_agent(wt, enclave_id)["state"] == "exited"
    _check_result(wt, tmp_path)


def test_an_enclave_killed_while_the_node_agent_is_down_is_reported_killed(stack):
    from nitronb.s3 import client as storage

    wt, gate = stack
    _fresh_output(wt)
    before = _enclaves(wt)
    run = _cli_run(wt)
    enclave_id = _new_enclave(wt, before, run)
    _kill_node_agent(wt)
    sandbox = [pid for pid, line in _processes(enclave_id).items() if "bwrap" in line.split()[0]]
    assert sandbox
    os.kill(sandbox[0], signal.SIGKILL)
    _until(lambda: not _processes(enclave_id), "the enclave's end")
    _restart_node_agent(wt)

    out, err = run.communicate(timeout=PATIENCE)
    assert run.returncode == 128 + signal.SIGKILL, err
    assert f"enclave {enclave_id} (process) was killed by SIGKILL" in err
    _assert_ended(wt, enclave_id, -signal.SIGKILL)
    client = storage.client_for(workspace=wt.workspace)
    bucket, key = storage.parse_s3_uri(wt.state()["output_uri"])
    assert client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount") == 0


def test_an_enclave_whose_end_nothing_recorded_is_reported_lost(stack):
    from nitronb.errors import RunError
    from nitronb.enclave.runner import run_enclave

    wt, gate = stack
    _fresh_output(wt)
    state = wt.state()
    before = _enclaves(wt)
    failure: dict = {}

    def run() -> None:
        try:
            run_enclave(state["image_reference"], state["appconfig_id"], backend="process",
                        workspace=wt.workspace, timeout=PATIENCE)
        except RunError as exc:
            failure["error"] = exc

    runner = threading.Thread(target=run, daemon=True)
    runner.start()
    enclave_id = _new_enclave(wt, before)
    _kill_node_agent(wt)
    for pid in _processes(enclave_id):  # the supervisor too: nothing is left to record the end
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    _until(lambda: not _processes(enclave_id), "the enclave's end")
    _restart_node_agent(wt)
    runner.join(PATIENCE)

    assert "nothing recorded its exit code" in str(failure["error"])
    _assert_ended(wt, enclave_id, None, state="lost")



def _cli_follow(wt, enclave_id: str, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "NITRONB_WORKSPACE": str(wt.workspace)}
    return subprocess.run([sys.executable, "-m", "nitronb", "run", "--enclave", enclave_id,
                           *extra], env=env, capture_output=True, text=True, timeout=PATIENCE)


def test_an_enclave_left_behind_by_a_run_that_gave_up_is_followed_by_its_id(stack):
    wt, gate = stack
    _fresh_output(wt)
    before = _enclaves(wt)
    run = _cli_run(wt)
    enclave_id = _new_enclave(wt, before, run)
    _kill_node_agent(wt)
    run.kill()  # the user gives up on the first run
    run.communicate(timeout=PATIENCE)

    waited = _cli_follow(wt, enclave_id, "--timeout", "1")
    assert waited.returncode == 1
    assert f"then see that outcome with `nitronb run --enclave {enclave_id}`" in waited.stderr
    assert "look with `nitronb run` again" not in waited.stderr
    assert _processes(enclave_id), "giving up waiting must leave the enclave running"

    gate.open()
    try:
        _until(lambda: not _processes(enclave_id), "the enclave's end")
    finally:
        gate.close()
    _restart_node_agent(wt)
    followed = _cli_follow(wt, enclave_id)
    assert followed.returncode == 0, followed.stderr
    assert f"enclave {enclave_id} (process) finished in" in followed.stderr
    assert "credentials wiped" in followed.stderr
    assert _enclaves(wt) - before == {enclave_id}, "following launches nothing"


_FIRST_AGENT = r"""
import sys, time
from pathlib import Path
from nitronb.enclave.backends import ContainerBackend, Prepared
from nitronb.enclave.engine import find_engine
from nitronb.enclave.node_agent import Enclave, NodeAgent

agent = NodeAgent(Path(sys.argv[1]))
engine = find_engine(timeout=60)
for enclave_id in sys.argv[3:]:
    folder = agent.folder / "enclaves" / enclave_id
    folder.mkdir(parents=True)
    enclave = Enclave(id=enclave_id, token="t0ken-" + enclave_id, backend="container",
                      image=sys.argv[2], appconfig_id="ab" * 32,
                      pcrs={f"pcr{i}": f"{i:02x}" * 48 for i in range(3)}, folder=folder)
    script = "echo started; while [ ! -e /tmp/go ]; do sleep 0.1; done; echo done; exit 7"
    prepared = Prepared(None, {"image_id": sys.argv[2], "entrypoint": ["sh", "-c"],
                               "command": [script]})
    enclave.handle = ContainerBackend(engine).start(
        prepared, {"NITRONB_ENCLAVE_ID": enclave_id, "NITRONB_ENCLAVE_TOKEN": enclave.token},
        folder, folder / "enclave.log")
    enclave.state = "running"
    agent._save(enclave)
print("ready", flush=True)
time.sleep(3600)
"""


@pytest.mark.engine
def test_container_enclaves_outlive_their_node_agent(tmp_path) -> None:
    """A node agent killed with SIGKILL leaves two containers running; one ends before the next
    node agent starts, the other after: the next one records both real exit codes (7), keeps
    each container's whole log once, and removes the containers and their token folders."""
    import docker.errors

    from nitronb.enclave.engine import find_engine
    from nitronb.enclave.image import default_base_image
    from nitronb.enclave.node_agent import NodeAgent

    engine = find_engine(timeout=30)
    if engine is None:
        pytest.skip("no container engine reachable (set DOCKER_HOST to Docker's or Podman's "
                    "service socket)")
    try:
        image_id = engine.images.get(default_base_image()).id
    except docker.errors.ImageNotFound:
        pytest.skip(f"no base image {default_base_image()}; run scripts/provision-podman.sh")
    workspace = tmp_path / "ws"
    ended, running = "enc-ends-while-down", "enc-runs-on"
    first = subprocess.Popen([sys.executable, "-c", _FIRST_AGENT, str(workspace), image_id,
                              ended, running], stdout=subprocess.PIPE, text=True)
    agent = None
    try:
        assert first.stdout.readline().strip() == "ready"
        containers = {name: engine.containers.list(
            all=True, filters={"label": f"nitronb.enclave={name}"})[0] for name in (ended, running)}
        _until(lambda: all("started" in (workspace / "node-agent" / "enclaves" / name /
                                         "enclave.log").read_text(encoding="utf-8")
                           for name in containers), "the containers' start")
        first.kill()
        first.wait()
        containers[ended].exec_run(["touch", "/tmp/go"])
        _until(lambda: containers[ended].reload() or containers[ended].status == "exited",
               "the end of a container")

        agent = NodeAgent(workspace)
        _until(lambda: agent.get(running).public()["state"] == "running"
               and agent.get(ended).public()["state"] == "exited", "the adoption")
        containers[running].exec_run(["touch", "/tmp/go"])
        _until(lambda: agent.get(running).public()["state"] == "exited", "the adopted end")
        for name in (ended, running):
            folder = workspace / "node-agent" / "enclaves" / name
            record = _until(lambda: (r := json.loads((folder / "enclave.json").read_text(
                encoding="utf-8")))["state"] == "exited" and r, "the recorded end")
            assert record["exit_code"] == 7
            _until(lambda: not engine.containers.list(
                all=True, filters={"label": f"nitronb.enclave={name}"}), "the removal")
            assert not (folder / "enclave-token").exists()
            log = (folder / "enclave.log").read_text(encoding="utf-8")
            assert (log.count("started"), log.count("done")) == (1, 1), log
    finally:
        first.kill()
        first.wait()
        for container in engine.containers.list(all=True, filters={"label": "nitronb.enclave"}):
            if container.labels.get("nitronb.enclave") in (ended, running):
                container.remove(force=True)


@pytest.fixture(scope="module")
def container_stack(tmp_path_factory):
    """The local stack and the walk-through approved with the gated app on the container
    backend, and the gate."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps
    from nitronb.enclave.engine import find_engine

    engine = find_engine(timeout=30)
    if engine is None:
        pytest.skip("no container engine reachable (set DOCKER_HOST to Docker's or Podman's "
                    "service socket)")
    tmp = tmp_path_factory.mktemp("agent-restart-container")
    gate = Gate()
    workspace = tmp / "ws"
    try:
        local.up(workspace)
        wt = steps.through_approval(workspace, backend="container",
                                    app_dir=_gated_app(tmp, gate.port))
        yield wt, gate, engine
    finally:
        local.down(workspace)


@pytest.mark.engine
def test_a_container_enclave_that_succeeds_while_the_node_agent_is_down(container_stack,
                                                                        tmp_path):
    wt, gate, engine = container_stack
    _fresh_output(wt)
    state = wt.state()
    before = _enclaves(wt)
    env = {**os.environ, "NITRONB_WORKSPACE": str(wt.workspace)}
    run = subprocess.Popen([sys.executable, "-m", "nitronb", "run", "--appconfig-id",
                            state["appconfig_id"], "--backend", "container",
                            state["image_reference"]],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    enclave_id = _new_enclave(wt, before, run)
    _kill_node_agent(wt)
    label = {"label": f"nitronb.enclave={enclave_id}"}
    container = engine.containers.list(all=True, filters=label)[0]
    gate.open()
    try:
        _until(lambda: container.reload() or container.status == "exited", "the container's end")
    finally:
        gate.close()
    assert _record(wt, enclave_id)["state"] == "running"
    _restart_node_agent(wt)

    out, err = run.communicate(timeout=PATIENCE)
    assert run.returncode == 0, err
    assert f"enclave {enclave_id} (container) finished in" in err
    record = _until(lambda: (r := _record(wt, enclave_id))["state"] != "running" and r,
                    "the recorded end")
    assert (record["state"], record["exit_code"]) == ("exited", 0)
    _until(lambda: not engine.containers.list(all=True, filters=label), "the removal")
    folder = wt.workspace / "node-agent" / "enclaves" / enclave_id
    assert not (folder / "enclave-token").exists()
    assert (folder / "enclave.log").read_text(encoding="utf-8").count("credentials wiped") == 1
    _check_result(wt, tmp_path)

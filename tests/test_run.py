"""The whole walk-through end to end on each backend (keys to decrypted result), and
``nitronb run`` from the command line: real manager, node agent and S3 endpoint on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXPECTED = {"count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}
#: an app written for the real enclave OS (``FROM python:3.11``, paths hard-coded)
BYO_APP_DIR = Path(__file__).resolve().parent / "data" / "byo_app"


def _approved_walkthrough(workspace: Path, backend: str, app_dir: Path | None = None):
    from nitronb.notebook import steps

    wt = steps.through_approval(workspace, backend=backend, app_dir=app_dir)
    assert wt.state()["backend"] == backend and wt.state()["appconfig_id"]
    return wt


@pytest.fixture(scope="module")
def process_wt(tmp_path_factory):
    from nitronb.local import stack as local

    workspace = tmp_path_factory.mktemp("run-process-ws")
    try:
        local.up(workspace)
        yield _approved_walkthrough(workspace, "process")
    finally:
        local.down(workspace)


@pytest.fixture(scope="module")
def engine():
    from nitronb.enclave.engine import find_engine

    found = find_engine(timeout=30)
    if found is None:
        pytest.skip("no container engine reachable (set DOCKER_HOST to Docker's or Podman's "
                    "service socket)")
    return found


@pytest.fixture(scope="module")
def container_wt(engine, tmp_path_factory):
    from nitronb.local import stack as local

    workspace = tmp_path_factory.mktemp("run-container-ws")
    try:
        local.up(workspace)
        yield _approved_walkthrough(workspace, "container")
    finally:
        local.down(workspace)


@pytest.fixture(scope="module")
def byo_container_wt(engine, tmp_path_factory):
    """The walk-through up to approval with the app brought, its base ``python:3.11`` made by
    tagging the provisioned base image (no registry is assumed reachable)."""
    import docker.errors

    from nitronb.local import stack as local
    from nitronb.enclave.image import default_base_image

    made = False
    try:
        engine.images.get("python:3.11")
    except docker.errors.ImageNotFound:
        try:
            engine.images.get(default_base_image()).tag("python", "3.11")
        except docker.errors.ImageNotFound:
            pytest.skip(f"no base image {default_base_image()} to tag as python:3.11; run "
                        "scripts/provision-podman.sh")
        made = True
    workspace = tmp_path_factory.mktemp("run-byo-ws")
    try:
        local.up(workspace)
        yield _approved_walkthrough(workspace, "container", BYO_APP_DIR)
    finally:
        local.down(workspace)
        if made:
            engine.images.remove("python:3.11")


def _secrets(wt) -> list[str]:
    from nitronb.keys import read_key_file

    state = wt.state()
    keys = [read_key_file(state["input_key"]), read_key_file(state["output_key"])]
    texts = [k.hex() if isinstance(k, bytes) else str(k) for k in keys]
    queries = [state[u].split("?", 1)[1] for u in ("input_url", "output_url")]
    return [t.lower() for t in texts] + [t.upper() for t in texts] + queries


def _assert_nothing_left(wt, enclave_id: str) -> None:
    folder = wt.workspace / "node-agent" / "enclaves" / enclave_id
    assert folder.is_dir()
    files = [p for p in folder.rglob("*") if p.is_file()]
    names = [p.name for p in files]
    assert "credentials.bin" not in names, names
    assert not [n for n in names if n.endswith(".csv")], names
    assert not (folder / "private").exists()
    for path in files:
        data = path.read_bytes().decode("utf-8", "replace")
        assert "Viral sinusitis" not in data, f"plaintext data in {path}"
        assert "START,STOP,PATIENT" not in data, f"the input's CSV header is in {path}"
        for secret in _secrets(wt):
            assert secret not in data, f"a credential is left in {path}"


def _check_result(wt) -> None:
    from nitronb.notebook import steps
    from nitronb.results import describe_summary

    result = steps.decrypt_output(wt)
    assert result.ok
    summary = describe_summary(result.text)
    assert list(summary.values()) == [EXPECTED], summary


def test_end_to_end_process_backend(process_wt) -> None:
    from nitronb.notebook import steps

    outcome = steps.run_workflow(process_wt, timeout=300)
    assert outcome.ok, outcome.log
    assert outcome.backend == "process" and outcome.refused is None
    assert outcome.measurements == process_wt.state()["measurements"]
    for line in ("[enclave-os] attested", "[enclave-os] provisioned: credentials for 2",
                 "credentials wiped"):
        assert line in outcome.log
    _check_result(process_wt)
    _assert_nothing_left(process_wt, outcome.enclave_id)


def test_cli_run_puts_the_result_in_the_store(process_wt) -> None:
    from nitronb.s3 import client as storage

    wt = process_wt
    state = wt.state()
    storage.delete_object(state["output_uri"], workspace=wt.workspace)
    env = {**os.environ, "NITRONB_WORKSPACE": str(wt.workspace)}
    done = subprocess.run([sys.executable, "-m", "nitronb", "run", "--appconfig-id",
                           state["appconfig_id"], "--backend", "process",
                           state["image_reference"]],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "(process) finished in" in done.stderr
    assert "credentials wiped" in done.stderr
    _check_result(wt)


def test_cli_run_exits_with_the_refusal(process_wt) -> None:
    import hashlib

    wt = process_wt
    env = {**os.environ, "NITRONB_WORKSPACE": str(wt.workspace)}
    done = subprocess.run([sys.executable, "-m", "nitronb", "run", "--appconfig-id",
                           hashlib.sha256(b"unknown").hexdigest(), "--backend", "process",
                           wt.state()["image_reference"]],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 70
    assert "nitronb: error: the enclave was refused: provisioning by the manager refused " \
           "(HTTP 404): no approved configuration" in done.stderr


@pytest.mark.engine
def test_end_to_end_container_backend(container_wt, engine) -> None:
    from nitronb.notebook import steps

    outcome = steps.run_workflow(container_wt, timeout=600)
    assert outcome.ok, outcome.log
    assert outcome.backend == "container" and outcome.refused is None
    assert outcome.measurements == container_wt.state()["measurements"]
    assert "credentials wiped" in outcome.log
    _check_result(container_wt)
    _assert_nothing_left(container_wt, outcome.enclave_id)
    left = engine.containers.list(all=True,
                                  filters={"label": f"nitronb.enclave={outcome.enclave_id}"})
    assert left == [], "the enclave's container must be removed once it exited"


@pytest.mark.engine
def test_an_app_written_for_the_enclave_os_runs_unmodified_in_a_container(byo_container_wt,
                                                                         engine) -> None:
    """The app brought hard-codes /opt/fortanix/enclave-os/app-config/rw, writes the decrypted
    input beside it and prints plain describe(): it runs as built, its base is the one its
    Dockerfile names, and nothing it wrote survives the enclave."""
    from nitronb.notebook import steps

    from nitronb.enclave.measure import measure_build_context

    wt = byo_container_wt
    measured = measure_build_context(BYO_APP_DIR, None, "python:3.11")  # FROM, not the default
    assert wt.state()["measurements"] == measured.as_dict()
    volumes = {v.name for v in engine.volumes.list()}
    outcome = steps.run_workflow(wt, timeout=600)
    assert outcome.ok, outcome.log
    assert outcome.backend == "container" and outcome.refused is None
    assert "decrypted input" in outcome.log and "uploaded the result to" in outcome.log
    result = steps.decrypt_output(wt)
    assert result.ok and result.returncode == 0
    assert result.text.startswith("count ")  # plain describe(), no path before it
    _check_result(wt)
    _assert_nothing_left(wt, outcome.enclave_id)
    assert engine.containers.list(
        all=True, filters={"label": f"nitronb.enclave={outcome.enclave_id}"}) == []
    assert {v.name for v in engine.volumes.list()} == volumes
    image_id = engine.images.get(wt.state()["image_reference"]).id
    assert engine.containers.list(all=True, filters={"ancestor": image_id}) == []
    assert "printed no value counts to chart" in steps.result_chart(result)._repr_html_()


def test_a_declined_version_runs_nothing_and_says_why(process_wt) -> None:
    """After a decline the earlier approved version's id is forgotten: 08 fails, naming the
    decline, and no result of an earlier run passes for this one."""
    from nitronb.notebook import steps
    from nitronb.errors import RunError

    wt = process_wt
    steps.create_workflow(wt, name="describe-declined")
    record = steps.approve_workflow(wt, decline={"output-owner": "not this quarter"})
    assert ("workflow status", "DENIED") in record.rows
    assert wt.state()["appconfig_id"] is None
    with pytest.raises(RunError, match="declined by output-owner: not this quarter"):
        steps.run_workflow(wt)


def test_a_failed_run_leaves_no_result_to_decrypt(process_wt) -> None:
    from nitronb.notebook import steps
    from nitronb.errors import RunError

    wt = process_wt
    wt.update(last_run={"enclave_id": "enc-x", "exit_code": 70})
    with pytest.raises(RunError, match="failed with exit code 70"):
        steps.decrypt_output(wt)


def test_declining_as_a_party_that_is_not_an_approver_is_refused(process_wt) -> None:
    from nitronb.notebook import steps
    from nitronb.errors import ValidationError

    steps.create_workflow(process_wt, name="describe-typo")
    with pytest.raises(ValidationError, match="output_owner cannot decline"):
        steps.approve_workflow(process_wt, decline={"output_owner": "typo"})


def test_an_app_that_fails_still_hands_its_error_to_the_output_owner(tmp_path) -> None:
    """The app exits 1 on a CSV without DESCRIPTION (the pre-check turned off): the run
    returns with the exit code, and the decrypted result holds pandas' own error."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps

    csv = tmp_path / "codes.csv"
    csv.write_text("START,CODE\n2020-01-01,1\n", encoding="utf-8")
    workspace = tmp_path / "ws"
    try:
        local.up(workspace)
        wt = steps.through_approval(workspace, backend="process", input_csv=csv,
                                    required_columns=[])
        outcome = steps.run_workflow(wt, timeout=300)
        assert outcome.exit_code == 1 and outcome.refused is None
        assert wt.state()["last_run"]["result_uploaded"] is True
        result = steps.decrypt_output(wt)
    finally:
        local.down(workspace)
    assert result.returncode == 1 and not result.ok
    assert result.error_line() == (
        "the enclave's app exited with code 1: ValueError: Usecols do not match columns, "
        "columns expected but not found: ['DESCRIPTION']")
    assert result.report().startswith(result.error_line() + "\n\nits stderr (last lines):\n")
    assert "the app failed" in repr(steps.result_table(result))
    assert "the app failed" in steps.result_chart(result)._repr_html_()


def test_an_app_written_for_the_enclave_os_runs_unmodified_in_the_process_sandbox(tmp_path):
    """The same app on the process backend: laid out at its Dockerfile's COPY destinations in a
    bubblewrap sandbox, its shebang's /usr/bin/python3 the stand-in interpreter, the app-config
    folder at its canonical path; what it wrote outside rw/ is gone on the host afterwards."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps
    from nitronb.enclave.sandbox import find_bwrap

    if find_bwrap() is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap); CI installs it")
    workspace = tmp_path / "ws"
    try:
        local.up(workspace)
        wt = _approved_walkthrough(workspace, "process", BYO_APP_DIR)
        outcome = steps.run_workflow(wt, timeout=600)
        assert outcome.ok, outcome.log
        result = steps.decrypt_output(wt)
        assert result.ok and result.text.startswith("count ")
        _check_result(wt)
        _assert_nothing_left(wt, outcome.enclave_id)
    finally:
        local.down(workspace)
    assert not Path("/opt/fortanix").exists() and not Path("/demo").exists()


@pytest.mark.engine
def test_the_container_backend_hands_the_token_in_a_read_only_folder(engine, tmp_path) -> None:
    """The token is not in the container's inspected environment; the launcher reads it from
    the bind-mounted folder, and the file's removal on the host shows inside the container."""
    import docker.errors

    from nitronb.enclave.backends import ContainerBackend, Prepared
    from nitronb.enclave.image import default_base_image

    try:
        image_id = engine.images.get(default_base_image()).id
    except docker.errors.ImageNotFound:
        pytest.skip(f"no base image {default_base_image()}; run scripts/provision-podman.sh")
    token = "t0ken-" + os.urandom(16).hex()
    env = {"NITRONB_ENCLAVE_ID": "enc-token-test", "NITRONB_ENCLAVE_TOKEN": token}
    prepared = Prepared(None, {"image_id": image_id, "entrypoint": ["sleep"],
                               "command": ["300"]})
    handle = ContainerBackend(engine).start(prepared, env, tmp_path, tmp_path / "enclave.log")
    try:
        container = handle.container
        container.reload()
        environment = container.attrs["Config"]["Env"] or []
        assert not [e for e in environment if token in e or
                    e.startswith("NITRONB_ENCLAVE_TOKEN=")], environment
        assert "NITRONB_ENCLAVE_TOKEN_FILE=/run/nitronb-enclave/token" in environment
        host_file = tmp_path / "enclave-token" / "token"
        assert oct(host_file.parent.stat().st_mode & 0o777) == "0o700"
        assert oct(host_file.stat().st_mode & 0o777) == "0o600"
        read = container.exec_run(["cat", "/run/nitronb-enclave/token"])
        assert read.exit_code == 0 and read.output.decode().strip() == token
        write = container.exec_run(["sh", "-c", "echo x > /run/nitronb-enclave/other"])
        assert write.exit_code != 0, "the token folder must be read-only in the container"
        host_file.unlink()  # what the node agent does once the token is used
        assert container.exec_run(["test", "-e", "/run/nitronb-enclave/token"]).exit_code != 0
    finally:
        handle.stop()
    assert handle.wait() is not None
    assert not (tmp_path / "enclave-token").exists()


def test_the_node_agent_removes_the_token_file_once_the_token_is_used(tmp_path) -> None:
    import base64

    from nitronb.errors import AuthenticationError
    from nitronb.enclave.node_agent import Enclave, NodeAgent

    agent = NodeAgent(tmp_path / "ws")
    folder = agent.folder / "enclaves" / "enc-file"
    (folder / "enclave-token").mkdir(parents=True)
    token_file = folder / "enclave-token" / "token"
    token_file.write_text("t0ken\n", encoding="utf-8")
    enclave = Enclave(id="enc-file", token="t0ken", backend="container", image="x",
                      appconfig_id="ab" * 32, pcrs={f"pcr{i}": f"{i:02x}" * 48 for i in range(3)},
                      folder=folder, state="running")
    agent.enclaves[enclave.id] = enclave
    body = {"nonce": base64.b64encode(b"n" * 16).decode()}
    with pytest.raises(AuthenticationError):
        agent.attest(enclave.id, "wrong", body)
    assert token_file.exists(), "a wrong token must not remove the file"
    assert agent.attest(enclave.id, "t0ken", body)["document"]
    assert not token_file.exists()


@pytest.mark.engine
def test_a_container_run_leaves_no_token_behind(engine, tmp_path) -> None:
    """Its own workspace: the app brought above is converted under the same image name."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps

    workspace = tmp_path / "ws"
    try:
        local.up(workspace)
        wt = _approved_walkthrough(workspace, "container")
        outcome = steps.run_workflow(wt, timeout=600)
    finally:
        local.down(workspace)
    assert outcome.ok, outcome.log
    folder = workspace / "node-agent" / "enclaves" / outcome.enclave_id
    assert folder.is_dir() and not (folder / "enclave-token").exists()
    assert not [p for p in folder.rglob("*") if p.name == "token"]

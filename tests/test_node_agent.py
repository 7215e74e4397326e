"""The node agent over HTTP (an agent served in-process on 127.0.0.1) and the runner's client side:
launch checks, the enclave's attestation documents (to the enclave only, while it runs), stop."""

from __future__ import annotations

import base64
import socket
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from nitronb.enclave_os.launcher import binding
from nitronb.errors import EndpointUnreachableError, RunError


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    """A node agent in a temporary workspace, served on a free loopback port."""
    from nitronb.enclave.node_agent import NodeAgent
    from nitronb.enclave.node_agent_api import make_server

    workspace = tmp_path_factory.mktemp("agent-ws")
    node = NodeAgent(workspace)
    server = make_server(node)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield node
    finally:
        for enclave in list(node.enclaves.values()):
            if enclave.handle is not None and enclave.exit_code is None:
                enclave.handle.stop()
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def image(agent) -> str:
    from nitronb.enclave.image import default_app_dir
    from nitronb.enclave.process_image import prepare_process_image

    return prepare_process_image(default_app_dir(), None, "python3 (host)",
                                 workspace=agent.workspace).reference


@pytest.fixture()
def silent_manager():
    """A loopback port that accepts connections and never answers: the launcher waits on it."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def _op(agent) -> dict[str, str]:
    """The operator's bearer header (launch, list, log, stop)."""
    return {"Authorization": f"Bearer {agent.operator_token}"}


def _dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def _launch(agent, image, ccm_url, **extra):
    return requests.post(headers=_op(agent), url=f"{agent.url}/v1/enclaves", timeout=30,
                         json={"image": image, "appconfig_id": "ab" * 32, "ccm_url": ccm_url,
                               "backend": "process", **extra})


def _attest(agent, enclave_id, token, public=b"\x01" * 32):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    body = {"public_key": base64.b64encode(public).decode(),
            "user_data": base64.b64encode(binding(public, "ab" * 32)).decode(),
            "nonce": base64.b64encode(b"n" * 32).decode()}
    return requests.post(f"{agent.url}/v1/enclaves/{enclave_id}/attestation", json=body,
                         headers=headers, timeout=30)


def _wait_exit(agent, enclave_id, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = requests.get(headers=_op(agent), url=f"{agent.url}/v1/enclaves/{enclave_id}", timeout=30).json()
        if record["state"] == "exited":
            return record
        time.sleep(0.1)
    raise AssertionError(f"enclave {enclave_id} did not exit within {timeout} s")


def test_health_and_unknown_routes(agent) -> None:
    assert requests.get(f"{agent.url}/health", timeout=10).json() == {"status": "ok"}
    reply = requests.get(headers=_op(agent), url=f"{agent.url}/v1/enclaves/enc-nope", timeout=10)
    assert reply.status_code == 404 and "no enclave 'enc-nope'" in reply.json()["message"]
    assert requests.get(f"{agent.url}/v2/x", timeout=10).status_code == 404


@pytest.mark.parametrize("change, message", [
    ({"appconfig_id": "not-hex"}, "64 lower-case hex APPCONFIG_ID"),
    ({"ccm_url": "ftp://x"}, "manager's http(s) URL"),
    ({"backend": "vm"}, "unknown backend 'vm'"),
    ({"image": ""}, "'image' is required"),
])
def test_launch_checks_its_request(agent, image, change, message) -> None:
    body = {"image": image, "appconfig_id": "ab" * 32, "ccm_url": "http://127.0.0.1:1",
            "backend": "process", **change}
    reply = requests.post(headers=_op(agent), url=f"{agent.url}/v1/enclaves", json=body, timeout=30)
    assert reply.status_code == 422
    assert message in reply.json()["message"]


def test_launch_refuses_a_folder_that_is_not_an_image(agent, tmp_path) -> None:
    reply = _launch(agent, str(tmp_path), "http://127.0.0.1:1")
    assert reply.status_code == 422
    assert "not an enclave image tree" in reply.json()["message"]


def test_documents_go_to_the_running_enclave_only(agent, image, silent_manager) -> None:
    from nitronb.enclave.attestation import parse_document
    from nitronb.enclave.verification import verify_document

    reply = _launch(agent, image, silent_manager)
    assert reply.status_code == 200, reply.text
    record = reply.json()
    assert record["state"] == "running" and record["backend"] == "process"
    enclave = agent.enclaves[record["id"]]
    assert "token" not in record

    for token in (None, "wrong", enclave.token[:-1]):
        denied = _attest(agent, record["id"], token)
        assert denied.status_code == 401
        assert "only the enclave itself" in denied.json()["message"]

    public = b"\x02" * 32
    issued = _attest(agent, record["id"], enclave.token, public)
    assert issued.status_code == 200, issued.text
    document = base64.b64decode(issued.json()["document"])
    parsed = parse_document(document)
    assert parsed.public_key == public
    expected = {i: bytes.fromhex(record["measurements"][f"pcr{i}"]) for i in range(3)}
    verify_document(document, roots=[agent.nsm.root_path.read_bytes()],
                    expected_pcrs=expected, nonce=b"n" * 32, public_key=public,
                    config_id="ab" * 32)

    stopped = requests.post(headers=_op(agent), url=f"{agent.url}/v1/enclaves/{record['id']}/stop", timeout=60).json()
    assert stopped["state"] == "exited"
    late = _attest(agent, record["id"], enclave.token)
    assert late.status_code == 409
    assert "issued to running enclaves only" in late.json()["message"]
    listed = requests.get(headers=_op(agent), url=f"{agent.url}/v1/enclaves", timeout=10).json()
    assert any(e["id"] == record["id"] and e["attestations"] == 1 for e in listed)


def test_attestation_fields_must_be_base64(agent, image, silent_manager) -> None:
    record = _launch(agent, image, silent_manager).json()
    try:
        token = agent.enclaves[record["id"]].token
        reply = requests.post(f"{agent.url}/v1/enclaves/{record['id']}/attestation",
                              json={"public_key": "%%%"}, timeout=10,
                              headers={"Authorization": f"Bearer {token}"})
        assert reply.status_code == 422 and "not valid base64" in reply.json()["message"]
    finally:
        requests.post(headers=_op(agent), url=f"{agent.url}/v1/enclaves/{record['id']}/stop", timeout=60)


def test_unreachable_manager_ends_the_enclave_refused(agent, image) -> None:
    from nitronb.enclave.runner import run_enclave

    outcome = run_enclave(image, "ab" * 32, node_agent=agent.url, workspace=agent.workspace, ccm=_dead_url(),
                          backend="process", timeout=60)
    assert not outcome.ok and outcome.exit_code == 70
    assert outcome.refused.startswith("asking the manager for a nonce failed: cannot reach")
    assert outcome.reason == f"[enclave-os] refused: {outcome.refused}"
    folder = agent.folder / "enclaves" / outcome.enclave_id
    assert not (folder / "private").exists()
    assert "refused:" in (folder / "enclave.log").read_text()


def test_runner_reports_an_unreachable_agent_and_agent_refusals(agent, tmp_path) -> None:
    from nitronb.enclave.runner import run_enclave

    with pytest.raises(EndpointUnreachableError, match="does not answer"):
        run_enclave("x", "ab" * 32, node_agent=_dead_url(), workspace=agent.workspace, ccm="http://127.0.0.1:1")
    with pytest.raises(RunError, match=r"HTTP 422.*not an enclave image tree"):
        run_enclave(str(tmp_path), "ab" * 32, node_agent=agent.url, workspace=agent.workspace, ccm="http://127.0.0.1:1",
                    backend="process")


def test_run_outcome_refused_reads_the_launcher_line() -> None:
    from nitronb.enclave.runner import RunOutcome

    outcome = RunOutcome("enc-1", "process", 70, {}, "a\n[enclave-os] refused: PCR0 differs\n", 1.0)
    assert outcome.refused == "PCR0 differs" and not outcome.ok
    assert RunOutcome("enc-2", "process", 0, {}, "fine\n", 1.0).refused is None


LAUNCHED = ("[enclave-os] attested: public key and APPCONFIG_ID 0123456789ab… bound into the "
            "document\n[enclave-os] provisioned: credentials for 2 dataset(s)\n"
            "[enclave-os] wrote 4 file(s) under the app-config folder; starting the app\n")
ENDED = "[enclave-os] app exited with code 1; credentials wiped\n"


@pytest.mark.parametrize("log, reason", [
    ("a\n[enclave-os] refused: PCR0 differs\n[enclave-os] refused: later\n",
     "[enclave-os] refused: PCR0 differs"),
    (LAUNCHED + "[enclave-os] cannot start the app ['python3']: No such file\n" + ENDED,
     "[enclave-os] cannot start the app ['python3']: No such file"),
    (LAUNCHED + "start.py: downloaded the input dataset 'cxhcfxdvl' from http://s/in\n"
     "start.py: error: cannot decrypt the input dataset 'cxhcfxdvl': authentication failed\n"
     "start.py: uploaded the result to the output dataset 'bzbrs5dr' at http://s/out\n" + ENDED,
     "start.py: error: cannot decrypt the input dataset 'cxhcfxdvl': authentication failed"),
    (LAUNCHED + "Traceback (most recent call last):\n  File \"/app/run.py\", line 3, in <module>\n"
     "    raise SystemExit(\"failed\")\nValueError: Usecols do not match columns\n" + ENDED,
     "ValueError: Usecols do not match columns"),
    (LAUNCHED + "counting rows\nall done\n" + ENDED, "all done"),
    (LAUNCHED + ENDED, ENDED.strip()),
    ("", None),
])
def test_run_outcome_reason_names_the_line_that_says_why(log, reason) -> None:
    from nitronb.enclave.runner import RunOutcome

    assert RunOutcome("enc-3", "process", 1, {}, log, 1.0).reason == reason
    assert RunOutcome("enc-4", "process", 0, {}, log, 1.0).reason is None


def test_log_endpoint_returns_the_enclave_log(agent, image) -> None:
    from nitronb.enclave.runner import run_enclave

    outcome = run_enclave(image, "ab" * 32, node_agent=agent.url, workspace=agent.workspace, ccm=_dead_url(),
                          backend="process", timeout=60)
    text = requests.get(headers=_op(agent), url=f"{agent.url}/v1/enclaves/{outcome.enclave_id}/log", timeout=10).json()
    assert text["log"] == outcome.log
    assert Path(agent.folder / "enclaves" / outcome.enclave_id / "enclave.json").is_file()


def test_an_enclave_still_starting_gets_its_document(agent) -> None:
    """An engine may run the enclave before its start call returns: it attests meanwhile."""
    from nitronb.enclave.node_agent import Enclave

    pcrs = {f"pcr{i}": f"{i:02x}" * 48 for i in range(3)}
    enclave = Enclave(id="enc-starting", token="t0ken", backend="container", image="x",
                      appconfig_id="ab" * 32, pcrs=pcrs, folder=agent.folder)
    agent.enclaves[enclave.id] = enclave
    try:
        assert _attest(agent, enclave.id, "t0ken").status_code == 200
        enclave.state = "failed"
        assert _attest(agent, enclave.id, "t0ken").status_code == 409
    finally:
        del agent.enclaves[enclave.id]


def test_a_launch_that_fails_to_start_is_recorded_failed(agent, image, monkeypatch) -> None:
    from nitronb.enclave.backends import ProcessBackend

    def broken(self, *args, **kwargs):
        raise OSError("no such interpreter")

    monkeypatch.setattr(ProcessBackend, "start", broken)
    reply = _launch(agent, image, "http://127.0.0.1:1")
    assert reply.status_code == 500
    failed = [e for e in agent.enclaves.values() if e.state == "failed"]
    assert len(failed) == 1 and failed[0].handle is None


def test_operator_routes_need_the_operator_token(agent, image) -> None:
    folder = agent.workspace / "node-agent" / "enclaves"
    before = (set(agent.enclaves), sorted(os.listdir(folder)) if folder.exists() else [])
    body = {"image": image, "appconfig_id": "5a" * 32, "ccm_url": "http://127.0.0.1:1"}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic x"}):
        assert requests.post(f"{agent.url}/v1/enclaves", json=body, headers=headers,
                             timeout=30).status_code == 401
        assert requests.get(f"{agent.url}/v1/enclaves", headers=headers,
                            timeout=30).status_code == 401
    token = (agent.workspace / "node-agent" / "operator.token")
    assert token.stat().st_mode & 0o777 == 0o600
    # no enclave was launched, in memory or on disk, for the unauthenticated requests
    assert (set(agent.enclaves), sorted(os.listdir(folder)) if folder.exists() else []) == before
    assert not [e for e in agent.enclaves.values() if e.appconfig_id == "5a" * 32]
    # the same request with the operator's token does launch one
    launched = requests.post(f"{agent.url}/v1/enclaves", json=body, headers=_op(agent),
                             timeout=30)
    assert launched.status_code == 200, launched.text
    assert set(agent.enclaves) == before[0] | {launched.json()["id"]}
    _wait_exit(agent, launched.json()["id"])


def test_a_body_that_is_not_json_is_refused(agent, image) -> None:
    body = '{"image": "%s", "appconfig_id": "%s", "ccm_url": "http://127.0.0.1:1"}' % (
        image, "ab" * 32)
    reply = requests.post(f"{agent.url}/v1/enclaves", data=body, timeout=30,
                          headers={**_op(agent), "Content-Type": "text/plain"})
    assert reply.status_code == 422 and "application/json" in reply.json()["message"]


def test_a_request_cannot_change_the_measured_command(agent, image, tmp_path) -> None:
    marker = tmp_path / "injected"
    reply = _launch(agent, image, _dead_url(),
                    command=["python3", "-c", f"open({str(marker)!r}, 'w').write('x')"])
    assert reply.status_code == 200
    record = _wait_exit(agent, reply.json()["id"])
    assert record["exit_code"] == 70  # the launcher refused: the manager does not answer
    assert not marker.exists()


@pytest.mark.parametrize("length, status", [("abc", 400), ("-1", 400), (str(10 << 20), 413)])
def test_a_bad_content_length_is_answered_without_reading(agent, length, status) -> None:
    import http.client

    host, port = agent.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    connection.putrequest("POST", "/v1/enclaves")
    connection.putheader("Content-Length", length)
    connection.putheader("Content-Type", "application/json")
    connection.endheaders()
    reply = connection.getresponse()
    assert reply.status == status
    connection.close()

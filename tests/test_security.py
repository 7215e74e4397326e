"""What the manager, the node agent and the launcher refuse (issue 5): a changed image, a workflow
that is not approved, replayed or misbound documents, a foreign root, path escapes, documents
asked by others, altered image folders. Real components over HTTP on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import stat
from pathlib import Path

import pytest
import requests

from nitronb.enclave_os.launcher import binding

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def approved(tmp_path_factory):
    """A workspace whose walk-through (process backend) is approved up to APPCONFIG_ID."""
    from nitronb.local import stack as local
    from nitronb.notebook import steps

    workspace = tmp_path_factory.mktemp("security-ws")
    try:
        local.up(workspace)
        yield steps.through_approval(workspace, backend="process")
    finally:
        local.down(workspace)


def _manager(wt) -> str:
    from nitronb.local import stack as local

    return local.url("manager", wt.workspace)


def _agent(wt) -> str:
    from nitronb.local import stack as local

    return local.url("node-agent", wt.workspace)


def _nonce(wt) -> bytes:
    reply = requests.post(f"{_manager(wt)}/v1/runtime/nonces", json={}, timeout=30)
    reply.raise_for_status()
    return base64.b64decode(reply.json()["nonce"])


def _provision(wt, config_id: str, document: bytes, nonce: bytes) -> requests.Response:
    return requests.post(f"{_manager(wt)}/v1/runtime/app_configs/{config_id}/provision",
                         json={"attestation_document": base64.b64encode(document).decode(),
                               "nonce": base64.b64encode(nonce).decode()}, timeout=30)


def _document(wt, nsm_folder: Path, *, bound_to: str, nonce: bytes, pcrs=None):
    """A document from the NSM in ``nsm_folder`` with the approved build's PCRs (or ``pcrs``)."""
    from nitronb.enclave_os.launcher import new_key_pair
    from nitronb.enclave.nsm import LocalNSM

    private, public = new_key_pair()
    measured = pcrs or {i: wt.state()["measurements"][f"pcr{i}"] for i in range(3)}
    document = LocalNSM(nsm_folder).attest(pcrs=measured, public_key=public,
                                           user_data=binding(public, bound_to), nonce=nonce)
    return private, document


def _output_missing(wt) -> bool:
    from nitronb.s3 import transfers
    from nitronb.errors import NoSuchObjectError

    try:
        transfers.download_file(wt.state()["output_uri"], wt.workspace / "probe.enc",
                              workspace=wt.workspace, progress=False)
    except NoSuchObjectError:
        return True
    return False


def _delete_output(wt) -> None:
    from nitronb.s3 import client as storage

    storage.delete_object(wt.state()["output_uri"], workspace=wt.workspace)
    assert _output_missing(wt)


# --- the image ------------------------------------------------------------------------------


def test_one_changed_byte_in_the_app_is_refused_provisioning(approved, tmp_path) -> None:
    from nitronb.enclave.process_image import prepare_process_image
    from nitronb.enclave.runner import run_enclave

    wt = approved
    app = tmp_path / "enclave_image"
    shutil.copytree(ROOT / "enclave_image", app)
    script = app / "describe.py"
    data = bytearray(script.read_bytes())
    data[3] ^= 0x20  # the docstring's first letter changes case
    script.write_bytes(bytes(data))
    image = prepare_process_image(app, None, "python3 (host)", workspace=wt.workspace)
    approved_pcrs = wt.state()["measurements"]
    assert image.measurements.as_dict()["pcr0"] != approved_pcrs["pcr0"]
    assert image.measurements.as_dict()["pcr2"] != approved_pcrs["pcr2"]
    assert image.measurements.as_dict()["pcr1"] == approved_pcrs["pcr1"]

    _delete_output(wt)
    outcome = run_enclave(image.reference, wt.state()["appconfig_id"], backend="process",
                          workspace=wt.workspace, timeout=120)
    assert not outcome.ok and outcome.exit_code == 70
    assert outcome.refused is not None
    assert "provisioning by the manager refused (HTTP 403)" in outcome.refused
    assert "PCR0" in outcome.refused and "does not run the measured image" in outcome.refused
    assert "start.py" not in outcome.log
    assert _output_missing(wt), "a refused enclave must upload no result"


def test_an_altered_image_folder_is_refused_at_launch(approved, tmp_path) -> None:
    from nitronb.errors import RunError
    from nitronb.enclave.image import default_app_dir
    from nitronb.enclave.process_image import prepare_process_image
    from nitronb.enclave.runner import run_enclave

    wt = approved
    image = Path(prepare_process_image(default_app_dir(), None, "python3 (host)",
                                       workspace=tmp_path).reference)
    assert image.parent == tmp_path / "images"
    target = image / "app" / "describe.py"
    os.chmod(target, stat.S_IMODE(target.stat().st_mode) | stat.S_IWUSR)
    with open(target, "ab") as handle:
        handle.write(b"\n# changed after preparation\n")
    before = set((wt.workspace / "node-agent" / "enclaves").glob("*")) \
        if (wt.workspace / "node-agent" / "enclaves").exists() else set()
    with pytest.raises(RunError, match=r"HTTP 422.*was altered.*Prepare the image again"):
        run_enclave(str(image), wt.state()["appconfig_id"], backend="process",
                    workspace=wt.workspace, timeout=60)
    after = set((wt.workspace / "node-agent" / "enclaves").glob("*"))
    assert after == before, "no enclave may start from an altered image"


# --- the workflow's approval --------------------------------------------------------------------


def _second_workflow(wt, name: str) -> dict:
    owner = wt.client("app-owner")
    state = wt.state()
    graph = {"name": name, "description": "a second version for the refusal tests",
             "objects": {"input": {"type": "dataset", "dataset_id": state["input_dataset_id"]},
                         "app": {"type": "app", "app_config_id": state["app_config_id"]},
                         "output": {"type": "dataset", "dataset_id": state["output_dataset_id"]}},
             "edges": [{"source": "input", "target": "app", "port": "input"},
                       {"source": "app", "target": "output", "port": "output"}]}
    draft = owner.create_workflow(graph)
    return owner.request_approval(draft["id"])


def _candidate_id(wt, final: dict) -> str:
    """The APPCONFIG_ID the workflow version ``final`` would get on approval."""
    from nitronb.ccm import app_config_id

    config = dict(wt.client("admin").get_runtime_config(wt.state()["appconfig_id"])["config"])
    config["workflow"] = {**config["workflow"], "workflow_id": final["id"]}
    return app_config_id(config)


def _run_refused(wt, config_id: str) -> str:
    from nitronb.enclave.runner import run_enclave

    outcome = run_enclave(wt.state()["image_reference"], config_id, backend="process",
                          workspace=wt.workspace, timeout=120)
    assert not outcome.ok and outcome.refused, outcome.log
    return outcome.refused


def test_a_pending_workflow_is_not_provisioned(approved) -> None:
    wt = approved
    request = _second_workflow(wt, "pending-version")
    assert request["status"] == "PENDING"
    wt.client("data-owner").approve_request(request["id"])
    final = wt.client("app-owner").get_final_workflow(request["workflow_id"])
    assert final["status"] == "PENDING" and not final.get("app_config_ids")
    refused = _run_refused(wt, _candidate_id(wt, final))
    assert "provisioning by the manager refused (HTTP 404)" in refused
    assert "no approved configuration" in refused


def test_a_declined_workflow_is_not_provisioned(approved) -> None:
    from nitronb.errors import ConflictError

    wt = approved
    request = _second_workflow(wt, "declined-version")
    declined = wt.client("output-owner").deny_request(request["id"], "not this output")
    assert declined["status"] == "DENIED"
    final = wt.client("app-owner").get_final_workflow(request["workflow_id"])
    assert final["status"] == "DENIED" and not final.get("app_config_ids")
    with pytest.raises(ConflictError, match="already DENIED"):
        wt.client("data-owner").approve_request(request["id"])
    refused = _run_refused(wt, _candidate_id(wt, final))
    assert "no approved configuration" in refused


# --- the attestation document -------------------------------------------------------------------


def test_a_replayed_document_is_refused(approved) -> None:
    from nitronb.ccm.provisioning import open_envelope

    wt = approved
    config_id = wt.state()["appconfig_id"]
    nonce = _nonce(wt)
    private, document = _document(wt, wt.workspace / "nsm", bound_to=config_id, nonce=nonce)
    first = _provision(wt, config_id, document, nonce)
    assert first.status_code == 200, first.text
    release = open_envelope(private, first.json()["envelope"])
    port_map = release["config"]["workflow"]["port_map"]
    assert sorted(target["dataset"]["id"] for nodes in port_map.values()
                  for target in nodes.values()) == sorted(
        [wt.state()["input_dataset_id"], wt.state()["output_dataset_id"]])
    for port, nodes in port_map.items():
        for node in nodes:
            credentials = release["extra"]["connections"][port][node]["dataset"]["credentials"]
            assert len(credentials["encryption"]["key"]) == 64

    again = _provision(wt, config_id, document, nonce)
    assert again.status_code == 403
    assert "already used (replay refused)" in again.json()["message"]


def test_a_nonce_not_issued_by_the_manager_is_refused(approved) -> None:
    wt = approved
    config_id = wt.state()["appconfig_id"]
    nonce = os.urandom(32)
    _, document = _document(wt, wt.workspace / "nsm", bound_to=config_id, nonce=nonce)
    reply = _provision(wt, config_id, document, nonce)
    assert reply.status_code == 403 and "not issued by this manager" in reply.json()["message"]


def test_a_document_bound_to_another_config_is_refused(approved) -> None:
    wt = approved
    config_id = wt.state()["appconfig_id"]
    other = hashlib.sha256(b"another configuration").hexdigest()
    nonce = _nonce(wt)
    _, document = _document(wt, wt.workspace / "nsm", bound_to=other, nonce=nonce)
    reply = _provision(wt, config_id, document, nonce)
    assert reply.status_code == 403
    message = reply.json()["message"]
    assert "(binding)" in message and "does not bind its public_key" in message
    # the nonce was not spent by the refusal: a good document with it still provisions
    _, good = _document(wt, wt.workspace / "nsm", bound_to=config_id, nonce=nonce)
    assert _provision(wt, config_id, good, nonce).status_code == 200


def test_a_document_from_another_root_is_refused(approved, tmp_path) -> None:
    wt = approved
    config_id = wt.state()["appconfig_id"]
    nonce = _nonce(wt)
    _, document = _document(wt, tmp_path / "other-nsm", bound_to=config_id, nonce=nonce)
    reply = _provision(wt, config_id, document, nonce)
    assert reply.status_code == 403
    message = reply.json()["message"]
    assert message.startswith("the attestation document was refused (")
    assert "root" in message or "chain" in message or "trusted" in message, message


def test_a_document_with_other_pcrs_is_refused(approved) -> None:
    wt = approved
    config_id = wt.state()["appconfig_id"]
    nonce = _nonce(wt)
    zeros = {i: bytes(48) for i in range(3)}
    _, document = _document(wt, wt.workspace / "nsm", bound_to=config_id, nonce=nonce,
                            pcrs=zeros)
    reply = _provision(wt, config_id, document, nonce)
    assert reply.status_code == 403 and "(pcrs)" in reply.json()["message"]


# --- names and the node agent -------------------------------------------------------------------


def _dataset_payload(wt, name: str) -> dict:
    import json

    payload = json.loads(wt.path("dataset-synthea-conditions.json").read_text())
    payload = {k: payload[k] for k in ("description", "labels", "location", "credentials")
               if k in payload}
    return {**payload, "name": name, "long_description": ""}


@pytest.mark.parametrize("name", ["../x", "a/../../x", "..", "a/b"])
def test_the_manager_refuses_a_dataset_name_with_a_path(approved, name) -> None:
    from nitronb.errors import ValidationError

    wt = approved
    payload = _dataset_payload(wt, name)
    with pytest.raises(ValidationError) as caught:
        wt.client("data-owner").create_dataset(payload)
    assert caught.value.status == 422
    assert name not in [d["name"] for d in wt.client("admin").list_datasets()]


@pytest.mark.parametrize("node", ["../x", "a/b", "..", "x\x1b[2J"])
def test_the_manager_refuses_a_node_name_with_a_path(approved, node) -> None:
    from nitronb.errors import ValidationError

    wt = approved
    state = wt.state()
    graph = {"name": "node-with-a-path",
             "objects": {node: {"type": "dataset", "dataset_id": state["input_dataset_id"]},
                         "app": {"type": "app", "app_config_id": state["app_config_id"]},
                         "out": {"type": "dataset", "dataset_id": state["output_dataset_id"]}},
             "edges": [{"source": node, "target": "app", "port": "input"},
                       {"source": "app", "target": "out", "port": "output"}]}
    with pytest.raises(ValidationError, match="not a safe folder name") as caught:
        wt.client("app-owner").create_workflow(graph)
    assert caught.value.status == 422


def test_a_dataset_with_the_wrong_key_fails_the_run_naming_the_apps_error(approved) -> None:
    """The enclave writes each dataset in its node's folder; the app cannot decrypt an input
    whose key is wrong, and the run's reason is the app's error line, not the launcher's last."""
    from nitronb.ccm import workflow_graph
    from nitronb.keys import generate_key
    from nitronb.enclave.runner import run_enclave

    wt = approved
    state = wt.state()
    payload = _dataset_payload(wt, "conditions with a wrong key")
    payload["credentials"] = {**payload["credentials"], "encryption": {"key": generate_key()}}
    dataset = wt.client("data-owner").create_dataset(payload)
    owner = wt.client("app-owner")
    graph = workflow_graph("wrong-key", state["app_config_id"],
                           inputs={"input": dataset["id"]},
                           outputs={"output": state["output_dataset_id"]})
    node = next(k for k, o in graph["objects"].items() if o.get("dataset_id") == dataset["id"])
    request = owner.request_approval(owner.create_workflow(graph)["id"])
    for party in request["waiting_for"]:
        request = wt.client(party).approve_request(request["id"])
    (config_id,) = owner.get_final_workflow(request["workflow_id"])["app_config_ids"].values()
    outcome = run_enclave(state["image_reference"], config_id, backend="process",
                          workspace=wt.workspace, timeout=120)
    assert outcome.exit_code == 1 and outcome.refused is None
    assert f"start.py: downloaded the input dataset '{node}' from " in outcome.log
    assert outcome.reason == (f"start.py: error: cannot decrypt the input dataset '{node}': "
                              "authentication failed: wrong key, or the data was modified or "
                              "truncated.")
    assert outcome.log.strip().splitlines()[-1].endswith("credentials wiped")
    assert payload["credentials"]["encryption"]["key"] not in outcome.log


def test_the_node_agent_issues_documents_to_the_enclave_only(approved) -> None:
    from nitronb.enclave.runner import run_enclave

    wt = approved
    outcome = run_enclave(wt.state()["image_reference"], hashlib.sha256(b"x").hexdigest(),
                          backend="process", workspace=wt.workspace, timeout=120)
    public = os.urandom(32)
    body = {"public_key": base64.b64encode(public).decode(),
            "user_data": base64.b64encode(binding(public, wt.state()["appconfig_id"])).decode(),
            "nonce": base64.b64encode(_nonce(wt)).decode()}
    url = f"{_agent(wt)}/v1/enclaves/{outcome.enclave_id}/attestation"
    for headers in ({}, {"Authorization": "Bearer not-the-token"}, {"Authorization": "Basic x"}):
        reply = requests.post(url, json=body, headers=headers, timeout=30)
        assert reply.status_code == 401
        assert "only the enclave itself" in reply.json()["message"]
    # (409 for an exited enclave holding the right token: tests/test_node_agent.py)


def _planted(wt, change) -> str:
    """Store beside the approved runtime configuration one that ``change(config, extra)``
    altered, as a manager whose database was tampered with would serve it; return its id
    (``change`` may return the id to store it under, else the config's own hash)."""
    import json

    from nitronb.ccm import app_config_id
    from nitronb.ccm.store import Store

    store = Store(wt.workspace / "ccm" / "ccm.sqlite3")
    workflow_id, ac_id, config_text, extra_text = store.get_runtime_config(
        wt.state()["appconfig_id"])
    config, extra = json.loads(config_text), json.loads(extra_text)
    config_id = change(config, extra) or app_config_id(config)
    store.put_runtime_config(config_id, workflow_id, ac_id,
                             json.dumps(config, separators=(",", ":"), ensure_ascii=False),
                             json.dumps(extra), "2026-01-01T00:00:00Z")
    return config_id


def _rename(config, extra, *, port=None, node=None) -> None:
    """Rename the input port or its node in the config's port_map and in extra.connections."""
    for mapping in (config["workflow"]["port_map"], extra["connections"]):
        nodes = mapping.pop("input")
        if node is not None:
            nodes = {node: value for value in nodes.values()}
        mapping[port or "input"] = nodes


def _refused_launch(wt, config_id: str):
    from nitronb.enclave.runner import run_enclave

    outcome = run_enclave(wt.state()["image_reference"], config_id, backend="process",
                          workspace=wt.workspace, timeout=120)
    assert outcome.exit_code == 70
    assert "starting the app" not in outcome.log and "start.py" not in outcome.log
    enclave = wt.workspace / "node-agent" / "enclaves" / outcome.enclave_id
    assert not (enclave / "private").exists()
    # the node agent's and the supervisor's records only: nothing the release named
    assert sorted(p.name for p in enclave.rglob("*") if p.is_file()) == \
        ["enclave.json", "enclave.log", "exit.json", "supervisor.json"]
    assert [p for p in wt.workspace.rglob("*escape*")] == []
    return outcome


@pytest.mark.parametrize("port, node, says", [
    (None, "../escape", "unsafe node name '../escape'"),
    (None, "..", "unsafe node name '..'"),
    ("..", None, "unsafe port name '..'"),
    ("../escape", None, "unsafe port name '../escape'"),
    ("a/b", None, "unsafe port name 'a/b'"),
])
def test_a_release_naming_a_path_writes_nothing_outside(approved, port, node, says) -> None:
    """Whatever names a manager releases, the launcher writes nothing outside its app-config
    folder and never starts the app."""
    config_id = _planted(approved, lambda config, extra: _rename(config, extra, port=port,
                                                                 node=node))
    outcome = _refused_launch(approved, config_id)
    assert says in (outcome.refused or ""), outcome.log


def test_a_release_that_does_not_hash_to_its_id_is_refused_at_launch(approved) -> None:
    """A manager that serves another configuration under an APPCONFIG_ID: the launcher checks
    the hash before it writes anything or starts the app."""
    def swap(config, extra):
        config_id = hashlib.sha256(b"the configuration every party approved").hexdigest()
        config["labels"] = {**config["labels"], "changed": "after approval"}
        return config_id

    config_id = _planted(approved, swap)
    outcome = _refused_launch(approved, config_id)
    assert outcome.refused == ("the released configuration does not hash to APPCONFIG_ID "
                               f"{config_id[:12]}…; refusing it.")


def test_an_edited_image_record_cannot_change_the_command(tmp_path) -> None:
    """The command comes from the measured Dockerfile, not from the editable image.json."""
    import json
    import os

    from nitronb.enclave.image import HOST_PYTHON, default_app_dir
    from nitronb.enclave.process_image import prepare_process_image, verify_process_image

    image = prepare_process_image(default_app_dir(), None, HOST_PYTHON, workspace=tmp_path)
    record = Path(image.reference) / "image.json"
    os.chmod(record, 0o644)
    data = json.loads(record.read_text())
    data["command"] = ["python3", "-c", "print('not the measured app')"]
    record.write_text(json.dumps(data))
    again = verify_process_image(image.reference)
    assert again.measurements == image.measurements
    assert list(again.command) == ["python3", "/app/start.py"]


def test_the_process_backend_runs_a_private_copy_it_measured(tmp_path) -> None:
    from nitronb.enclave.backends import ProcessBackend
    from nitronb.enclave.image import HOST_PYTHON, default_app_dir
    from nitronb.enclave.process_image import prepare_process_image

    image = prepare_process_image(default_app_dir(), None, HOST_PYTHON, workspace=tmp_path)
    folder = tmp_path / "enclave"
    folder.mkdir()
    prepared = ProcessBackend().prepare(image.reference, folder)
    root = Path(prepared.launch["root"])
    assert root.is_relative_to(folder / "private") and root != Path(image.reference)
    assert prepared.measurements == image.measurements
    assert (root / "app" / "describe.py").read_bytes() == \
        (Path(image.reference) / "app" / "describe.py").read_bytes()

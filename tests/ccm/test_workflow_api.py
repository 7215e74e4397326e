"""DESIGN §2 steps 4–7 through the HTTP API of a real manager."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import threading

import pytest
import requests

import em_client_rule
from ccm_flow import build_world
from nitronb.ccm import CCMClient, app_config_id
from nitronb.errors import (AuthenticationError, ConflictError, NotFoundError,
                            PermissionDeniedError, ValidationError)
from nitronb.keys import fingerprint


def test_first_start_creates_the_parties_with_private_tokens(manager, manager_database):
    ccm = manager.workspace / "ccm"
    tokens = manager.tokens
    assert sorted(tokens) == ["admin", "app-owner", "data-owner", "output-owner"]
    assert len(set(tokens.values())) == 4
    for name in ("tokens.json", "manager.key"):
        assert stat.S_IMODE(os.stat(ccm / name).st_mode) == 0o600
    assert (ccm / "ccm.sqlite3").exists() == (manager_database is None)
    admin = manager.client("admin").whoami()["user"]
    assert admin["name"] == "admin" and "admin" in admin["roles"]
    assert "admin" not in manager.client("data-owner").whoami()["user"]["roles"]


def test_unauthenticated_and_unknown_tokens_get_401(manager):
    response = requests.get(manager.url + "/v1/datasets", timeout=5)
    assert response.status_code == 401
    assert "Bearer" in response.json()["message"]
    with pytest.raises(AuthenticationError):
        CCMClient(manager.url, "nbt_not-a-token").list_datasets()
    assert requests.get(manager.url + "/v1/sys/health", timeout=5).json() == {"status": "ok"}


def test_openapi_describes_the_v1_resources(manager):
    doc = requests.get(manager.url + "/openapi.json", timeout=5).json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/sys/auth", "/v1/apps", "/v1/builds", "/v1/tasks", "/v1/datasets",
                 "/v1/app_configs", "/v1/runtime/app_configs/{id}",
                 "/v1/workflows/draft/graphs", "/v1/workflows/final/graphs",
                 "/v1/approval_requests/{id}/approve", "/v1/approval_requests/{id}/deny"):
        assert path in doc["paths"], path


def test_every_owner_approves_and_the_appconfig_id_matches_the_served_config(manager):
    world = build_world(manager)
    ao, admin = world.clients["app-owner"], world.clients["admin"]
    assert {t["status"] for t in admin.list_tasks() if t["app_id"] == world.ids["app"]} == \
        {"APPROVED"}
    request = ao.request_approval(world.ids["draft"])
    assert request["status"] == "PENDING"
    assert request["approvers"] == ["app-owner", "data-owner", "output-owner"]
    with pytest.raises(PermissionDeniedError, match="owns nothing"):
        admin.approve_request(request["id"])
    for i, party in enumerate(request["approvers"]):
        state = world.clients[party].approve_request(request["id"])
        assert state["status"] == ("APPROVED" if i == 2 else "PENDING")
    with pytest.raises(ConflictError):
        world.clients["data-owner"].approve_request(request["id"])
    final = ao.get_final_workflow(request["workflow_id"])
    assert final["status"] == "APPROVED" and final["approval"]["status"] == "APPROVED"
    config_id = final["app_config_ids"]["app"]
    served = world.clients["data-owner"].get_runtime_config(config_id)
    assert set(served) == {"config", "extra"}
    text = json.dumps(served["config"], separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(text.encode()).hexdigest() == config_id == app_config_id(served["config"])
    assert em_client_rule.config_id(served) == config_id
    assert list(served["config"]) == ["app_config", "labels", "zone_ca", "workflow"]
    assert served["config"]["workflow"] == {
        "workflow_id": final["id"], "app_name": "app",
        "port_map": {"input": {"input": {"dataset": {"id": world.ids["input"]}}},
                     "output": {"output": {"dataset": {"id": world.ids["output"]}}}}}
    assert served["config"]["app_config"] == {
        "/opt/fortanix/enclave-os/app-config/rw/settings/column.txt": {
            "contents": base64.b64encode(b"DESCRIPTION").decode()}}
    assert served["config"]["labels"] == {"team": "research"}
    assert served["extra"]["connections"]["input"]["input"]["dataset"]["location"] == \
        admin.get_dataset("conditions")["location"]
    # the credentials never leave the manager to a user
    everything = json.dumps([c.list_datasets() for c in world.clients.values()] +
                            [served, admin.audit_log(limit=1000),
                             admin.get_dataset(world.ids["input"])])
    for key in world.keys.values():
        assert key not in everything and key.lower() not in everything
    assert "X-Amz-Signature" not in everything
    shown = admin.get_dataset("conditions")["credentials"]
    assert shown["query_string"] == "<redacted>"
    assert shown["encryption"] == {"key": "<redacted>",
                                   "key_fingerprint": fingerprint(world.keys["input"])}


def test_one_decline_rejects_with_its_reason(manager):
    world = build_world(manager)
    ao, oo = world.clients["app-owner"], world.clients["output-owner"]
    request = ao.request_approval(world.ids["draft"])
    world.clients["data-owner"].approve_request(request["id"])
    with pytest.raises(ValidationError, match="reason"):
        oo.deny_request(request["id"], " ")
    denied = oo.deny_request(request["id"], "the output bucket is not ours")
    assert denied["status"] == "DENIED" and denied["denied_by"] == "output-owner"
    assert denied["reason"] == "the output bucket is not ours"
    with pytest.raises(ConflictError):
        ao.approve_request(request["id"])
    final = ao.get_final_workflow(request["workflow_id"])
    assert final["status"] == "DENIED" and final["app_config_ids"] == {}
    assert final["approval"]["reason"] == "the output bucket is not ours"


def test_a_final_version_is_immutable_and_a_change_makes_a_new_draft_version(manager):
    world = build_world(manager)
    ao = world.clients["app-owner"]
    first = ao.request_approval(world.ids["draft"])
    with pytest.raises(ConflictError, match="already submitted"):
        ao.request_approval(world.ids["draft"])
    changed = ao.update_workflow(world.ids["draft"], {"description": "second try"})
    assert changed["version"] == 2
    second = ao.request_approval(world.ids["draft"])
    assert second["workflow_id"] != first["workflow_id"]
    v1 = ao.get_final_workflow(first["workflow_id"])
    assert v1["version"] == 1 and v1["description"] == "" and v1["status"] == "PENDING"
    assert ao.get_final_workflow(second["workflow_id"])["description"] == "second try"
    assert [f["version"] for f in ao.get_workflow(world.ids["draft"])["final_versions"]] == [1, 2]
    with pytest.raises(PermissionDeniedError):
        world.clients["data-owner"].update_workflow(world.ids["draft"], {"description": "x"})


def test_tasks_are_decided_by_an_administrator_only(manager):
    world = build_world(manager, approve_tasks=False)
    task = world.ids["tasks"][0]
    with pytest.raises(PermissionDeniedError, match="administrator"):
        world.clients["app-owner"].approve_task(task)
    assert world.clients["admin"].deny_task(task, "unknown domain")["status"] == "DENIED"
    with pytest.raises(ConflictError):
        world.clients["admin"].approve_task(task)
    types = {world.clients["admin"].get_task(t)["task_type"] for t in world.ids["tasks"]}
    assert types == {"DOMAIN_WHITELIST", "BUILD_WHITELIST"}


def test_graphs_are_validated(manager):
    world = build_world(manager)
    ao = world.clients["app-owner"]
    objects = {"app": {"type": "app", "app_config_id": world.ids["config"]},
               "input": {"type": "dataset", "dataset_id": "conditions"},
               "output": {"type": "dataset", "dataset_id": "describe-result"}}
    bad = {
        "no port": [{"source": "input", "target": "app", "port": "nope"},
                    {"source": "app", "target": "output", "port": "output"}],
        "'out' port": [{"source": "input", "target": "app", "port": "output"},
                       {"source": "app", "target": "output", "port": "output"}],
        "not connected": [{"source": "input", "target": "app", "port": "input"}],
        "joins dataset": [{"source": "input", "target": "output", "port": "input"},
                          {"source": "app", "target": "output", "port": "output"}],
        "not an object": [{"source": "ghost", "target": "app", "port": "input"}],
    }
    for message, edges in bad.items():
        with pytest.raises(ValidationError, match=message):
            ao.create_workflow({"name": "bad", "objects": objects, "edges": edges})
    with pytest.raises(NotFoundError):
        ao.create_workflow({"name": "bad", "edges": [], "objects": {
            **objects, "input": {"type": "dataset", "dataset_id": "no-such-dataset"}}})


def test_payloads_are_validated_and_owners_enforced(manager):
    world = build_world(manager)
    do, ao = world.clients["data-owner"], world.clients["app-owner"]
    base = {"name": "x", "location": "http://127.0.0.1:9/b/o",
            "credentials": {"query_string": "YQ==", "encryption": {"key": "00" * 32}}}
    with pytest.raises(ValidationError, match="query string"):
        do.create_dataset({**base, "location": "http://127.0.0.1:9/b/o?X-Amz-Signature=1"})
    with pytest.raises(ValidationError, match="64 hex"):
        do.create_dataset({**base, "credentials": {"query_string": "YQ==",
                                                   "encryption": {"key": "abc"}}})
    with pytest.raises(ConflictError, match="already exists"):
        do.create_dataset({**base, "name": "conditions"})
    config = {"name": "c2", "image": world.ids["image"], "ports": ["input", "output"]}
    for items in ({"../escape": "x"}, {"/etc/passwd": "x"}, {"a/\x00b": "x"},
                  {"input/conditions/dataset/credentials.bin": "x"},
                  {"/opt/fortanix/enclave-os/app-config/rw/../x": "x"}):
        with pytest.raises(ValidationError):
            ao.create_app_config({**config, "config_items": items})
    kept = ao.create_app_config({**config, "name": "c-abs", "config_items": {
        "/opt/fortanix/enclave-os/app-config/rw/conf/x.txt": "x"}})
    assert kept["config_items"] == {"/opt/fortanix/enclave-os/app-config/rw/conf/x.txt": "x"}
    with pytest.raises(ValidationError, match="begin with"):
        ao.create_app_config({**config, "ports": ["data"]})
    with pytest.raises(ValidationError, match="no build"):
        ao.create_app_config({**config, "image": "unknown:tag"})
    with pytest.raises(PermissionDeniedError):
        do.create_app_config(config)
    with pytest.raises(PermissionDeniedError):
        do.create_build({"app_id": world.ids["app"], "image": "i",
                         "measurements": {"hash_algorithm": "Sha384", "pcr0": "00" * 48,
                                          "pcr1": "00" * 48, "pcr2": "00" * 48}})
    with pytest.raises(PermissionDeniedError):
        ao.update_dataset("conditions", {"description": "mine now"})
    assert ao.create_app_config({**config, "ports": {"in": "in", "out": "out"}})["ports"] == \
        {"in": "in", "out": "out"}
    with pytest.raises(NotFoundError):
        do.get_app("no-such-app")


def test_several_clients_at_once_are_safe(manager):
    clients = [manager.client(p) for p in ("data-owner", "output-owner")]
    errors = []

    def create(i):
        try:
            clients[i % 2].create_dataset({
                "name": f"parallel-{i}", "location": f"http://127.0.0.1:9/b/{i}",
                "credentials": {"query_string": "YQ==", "encryption": {"key": "AB" * 32}}})
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    names = {d["name"] for d in manager.client("admin").list_datasets()}
    assert {f"parallel-{i}" for i in range(16)} <= names
    assert clients[0].verify_audit()["ok"] is True


def test_http_errors_are_json_with_clear_messages(manager):
    headers = {"Authorization": f"Bearer {manager.tokens['data-owner']}"}
    bad = requests.post(manager.url + "/v1/datasets", data=b"{not json", headers=headers,
                        timeout=5)
    assert bad.status_code == 422 and "not JSON" in bad.json()["message"]
    wrong = requests.delete(manager.url + "/v1/datasets", headers=headers, timeout=5)
    assert wrong.status_code == 405 and "GET, POST" in wrong.json()["message"]
    missing = requests.get(manager.url + "/v1/nothing-here", headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"] == "NotFoundError"
    client = manager.client("data-owner")
    client.create_dataset({"name": "my data", "location": "http://127.0.0.1:9/b/o",
                           "credentials": {"query_string": "", "encryption": {"key": "0" * 64}}})
    assert client.get_dataset("my data")["name"] == "my data"


def test_a_dataset_location_moves_only_with_its_credentials(manager):
    world = build_world(manager)
    do = world.clients["data-owner"]
    moved = "http://127.0.0.1:9/nitronb/elsewhere/conditions.csv.enc"
    with pytest.raises(ValidationError, match="needs its credentials"):
        do.update_dataset("conditions", {"location": moved})
    creds = {"query_string": "YQ==", "encryption": {"key": "11" * 32}}
    assert do.update_dataset("conditions", {"location": moved, "credentials": creds})[
        "location"] == moved
    with pytest.raises(ValidationError, match="query string"):
        do.update_dataset("conditions", {"location": moved + "?X-Amz-Signature=1",
                                         "credentials": creds})
    with pytest.raises(PermissionDeniedError):
        world.clients["app-owner"].update_dataset("conditions", {"location": moved,
                                                                 "credentials": creds})


UNSAFE_PORTS = ["..", "a/b", "../x", "/x", ".", "a..b", "x\n", ".hidden", "-x", "in put",
                "x" * 65, "a\\b", "é"]


def test_port_names_with_a_path_are_refused_with_422(manager):
    """A port is a folder of the enclave's app-config tree: a name that is not one folder name
    is refused, in an app configuration's ports and in a workflow's edges."""
    world = build_world(manager)
    ao = world.clients["app-owner"]
    config = {"name": "ports", "image": world.ids["image"]}
    cases = [{port: "in", "output": "out"} for port in UNSAFE_PORTS]
    cases += [["input", port] for port in ("output/x", "output..", "output\n", "input/../x")]
    for ports in cases:
        with pytest.raises(ValidationError, match="port name") as caught:
            ao.create_app_config({**config, "ports": ports})
        assert caught.value.status == 422
    assert "ports" not in [c["name"] for c in ao.list_app_configs()]
    objects = {"app": {"type": "app", "app_config_id": world.ids["config"]},
               "input": {"type": "dataset", "dataset_id": world.ids["input"]},
               "output": {"type": "dataset", "dataset_id": world.ids["output"]}}
    for port in ("..", "a/b"):
        with pytest.raises(ValidationError, match="has no port") as caught:
            ao.create_workflow({"name": "bad-port", "objects": objects, "edges": [
                {"source": "input", "target": "app", "port": port},
                {"source": "app", "target": "output", "port": "output"}]})
        assert caught.value.status == 422


def test_the_manager_and_the_launcher_apply_one_port_name_rule():
    from nitronb.ccm import _checks
    from nitronb.enclave_os import launcher
    from nitronb.errors import ValidationError as Refused

    for name in [*UNSAFE_PORTS, "input", "output", "in.put", "a-b_c", "x" * 64, "0"]:
        try:
            launcher.port_part(name)
            launcher_accepts = True
        except launcher.LaunchError:
            launcher_accepts = False
        try:
            _checks.ports({name: "in"})
            manager_accepts = True
        except Refused:
            manager_accepts = False
        assert launcher_accepts == manager_accepts, name
        assert launcher_accepts == (name in ("input", "output", "in.put", "a-b_c", "x" * 64,
                                             "0")), name

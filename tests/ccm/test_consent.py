"""Consent that can be withdrawn: revoked and superseded workflow versions, revoked whitelisting
tasks, and the reasons given for declines and withdrawals."""

from __future__ import annotations

import base64
import json

import pytest
import requests

from ccm_fake_nsm import make_document
from ccm_flow import PCRS, approve_all, build_world, measurements
from nitronb.ccm import CCMClient, new_enclave_key
from nitronb.errors import (ConflictError, NotFoundError, PermissionDeniedError,
                            ProvisioningRefusedError, ValidationError)


def _provision(manager, config_id):
    enclave = CCMClient(manager.url)
    nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    _, public = new_enclave_key()
    document = make_document(manager.workspace, pcrs=PCRS, public_key=public,
                             config_id=config_id, nonce=nonce)
    return enclave.provision(config_id, document, nonce)


def _new_version(world, description):
    """The app owner changes the draft and requests approval; every owner approves."""
    ao = world.clients["app-owner"]
    ao.update_workflow(world.ids["draft"], {"description": description})
    request = ao.request_approval(world.ids["draft"])
    return request, ao


def test_an_approver_withdraws_its_approval_and_the_appconfig_id_is_refused(manager):
    world = build_world(manager)
    final = approve_all(world)
    config_id = final["app_config_ids"]["app"]
    assert _provision(manager, config_id)["app_config_id"] == config_id
    do, admin = world.clients["data-owner"], world.clients["admin"]

    with pytest.raises(PermissionDeniedError, match="only an approver"):
        admin.revoke_workflow(final["id"], "the administrator is no party")
    with pytest.raises(ValidationError, match="needs a reason"):
        do.revoke_workflow(final["id"], "  ")
    revoked = do.revoke_workflow(final["id"], "consent withdrawn for 2027")
    assert revoked["status"] == "REVOKED" and revoked["revoked_by"] == "data-owner"
    assert revoked["revoke_reason"] == "consent withdrawn for 2027"
    with pytest.raises(ConflictError, match="REVOKED"):
        world.clients["output-owner"].revoke_workflow(final["id"], "twice")

    with pytest.raises(ProvisioningRefusedError,
                       match="withdrawn by data-owner .*: consent withdrawn for 2027") as info:
        _provision(manager, config_id)
    assert info.value.status == 403
    rows = admin.audit_log(limit=1000)
    revoke = [r for r in rows if r["action"] == "workflow.revoke"]
    assert len(revoke) == 1 and revoke[0]["actor"] == "data-owner"
    assert revoke[0]["details"]["reason"] == "consent withdrawn for 2027"
    assert [r["action"] for r in rows if r["object_id"] == config_id][-1] == \
        "provision.refused"
    assert admin.get_workflow(world.ids["draft"])["final_versions"][0]["status"] == "REVOKED"


def test_the_http_route_refuses_with_403_naming_who_and_why(manager):
    world = build_world(manager)
    final = approve_all(world)
    config_id = final["app_config_ids"]["app"]
    tokens = manager.tokens
    answer = requests.post(f"{manager.url}/v1/workflows/final/graphs/{final['id']}/revoke",
                           json={"reason": "audit finding"}, timeout=10,
                           headers={"Authorization": f"Bearer {tokens['output-owner']}"})
    assert answer.status_code == 200 and answer.json()["status"] == "REVOKED"
    enclave = CCMClient(manager.url)
    nonce = base64.b64decode(enclave.issue_nonce()["nonce"])
    _, public = new_enclave_key()
    document = make_document(manager.workspace, pcrs=PCRS, public_key=public,
                             config_id=config_id, nonce=nonce)
    refused = requests.post(
        f"{manager.url}/v1/runtime/app_configs/{config_id}/provision", timeout=10,
        json={"attestation_document": base64.b64encode(document).decode(),
              "nonce": base64.b64encode(nonce).decode()})
    assert refused.status_code == 403
    assert refused.json()["error"] == "ProvisioningRefusedError"
    assert "withdrawn by output-owner" in refused.json()["message"]
    assert "audit finding" in refused.json()["message"]
    document = manager.client("admin").openapi()
    body = json.dumps(document["paths"]["/v1/workflows/final/graphs/{id}/revoke"]["post"][
        "requestBody"])
    assert "#/components/schemas/Reason" in body
    assert "reason" in document["components"]["schemas"]["Reason"]["properties"]


def test_a_withdrawal_between_attestation_and_release_releases_nothing(tmp_path):
    """An enclave whose attestation is being verified when an approver withdraws receives
    nothing: consent is read again where the release is made."""
    from ccm_fake_nsm import FakeVerifier
    from ccm_flow import ServiceManager

    class WithdrawingVerifier(FakeVerifier):
        def verify(self, document, **kwargs):
            verified = super().verify(document, **kwargs)
            service = manager.service
            service.revoke_workflow(service._user_by_name("output-owner"), final["id"],
                                    "withdrawn while the enclave attested")
            return verified

    manager = ServiceManager(tmp_path, verifier=WithdrawingVerifier(tmp_path))
    world = build_world(manager)
    final = approve_all(world)
    config_id = final["app_config_ids"]["app"]
    service = manager.service
    nonce = base64.b64decode(service.issue_nonce()["nonce"])
    _, public = new_enclave_key()
    document = make_document(tmp_path, pcrs=PCRS, public_key=public, config_id=config_id,
                             nonce=nonce)
    with pytest.raises(ProvisioningRefusedError, match="withdrawn by output-owner"):
        service.provision(config_id, base64.b64encode(document).decode())
    actions = [r["action"] for r in service.audit_log(service._user_by_name("admin"),
                                                      object_id=config_id)]
    assert actions == ["provision.refused"]


def test_a_newer_approved_version_supersedes_the_older(manager):
    world = build_world(manager)
    first = approve_all(world)
    old_id = first["app_config_ids"]["app"]
    request, ao = _new_version(world, "version 2")
    for party in request["approvers"]:
        world.clients[party].approve_request(request["id"])
    second = ao.get_final_workflow(request["workflow_id"])
    new_id = second["app_config_ids"]["app"]
    assert new_id != old_id and second["status"] == "APPROVED"
    old = ao.get_final_workflow(first["id"])
    assert old["status"] == "SUPERSEDED" and old["superseded_by"] == second["version"] == 2
    with pytest.raises(ProvisioningRefusedError, match="superseded by version 2"):
        _provision(manager, old_id)
    assert _provision(manager, new_id)["app_config_id"] == new_id
    with pytest.raises(ConflictError, match="SUPERSEDED"):
        world.clients["data-owner"].revoke_workflow(first["id"], "too late")
    assert [r["action"] for r in world.clients["admin"].audit_log(object_id=first["id"])][-1] \
        == "workflow.supersede"


def test_many_approvals_leave_one_runnable_version(manager):
    world = build_world(manager)
    ids = [approve_all(world)["app_config_ids"]["app"]]
    for n in range(2, 5):
        request, ao = _new_version(world, f"version {n}")
        for party in request["approvers"]:
            world.clients[party].approve_request(request["id"])
        ids.append(ao.get_final_workflow(request["workflow_id"])["app_config_ids"]["app"])
    statuses = [f["status"] for f in
                world.clients["admin"].get_workflow(world.ids["draft"])["final_versions"]]
    assert statuses == ["SUPERSEDED", "SUPERSEDED", "SUPERSEDED", "APPROVED"]
    for n, old in enumerate(ids[:-1], 1):
        with pytest.raises(ProvisioningRefusedError,
                           match=f"version {n} .* superseded by version {n + 1}; version 4 is "
                                 "the one that runs now"):
            _provision(manager, old)


def test_an_older_version_approved_after_a_newer_one_is_superseded_at_once(manager):
    world = build_world(manager)
    ao = world.clients["app-owner"]
    older = ao.request_approval(world.ids["draft"])
    request, _ = _new_version(world, "version 2")
    for party in request["approvers"]:
        world.clients[party].approve_request(request["id"])
    for party in older["approvers"]:
        world.clients[party].approve_request(older["id"])
    stale = ao.get_final_workflow(older["workflow_id"])
    assert stale["status"] == "SUPERSEDED" and stale["superseded_by"] == 2
    with pytest.raises(ProvisioningRefusedError, match="superseded by version 2"):
        _provision(manager, stale["app_config_ids"]["app"])
    newest = ao.get_final_workflow(request["workflow_id"])
    assert newest["status"] == "APPROVED"


def test_the_administrator_revokes_a_build_and_its_measurements_are_refused(manager):
    world = build_world(manager)
    final = approve_all(world)
    config_id = final["app_config_ids"]["app"]
    admin, ao = world.clients["admin"], world.clients["app-owner"]
    build_task = admin.get_build(world.ids["build"])["task_id"]
    # a second build with the same measurements, approved before the revocation
    twin = ao.create_build({"app_id": world.ids["app"], "image": "nitronb/describe:twin",
                            "measurements": measurements()})
    admin.approve_task(twin["task_id"])
    twin_config = ao.create_app_config({"name": "twin-config", "image": "nitronb/describe:twin",
                                        "build_id": twin["id"], "ports": ["input", "output"]})

    with pytest.raises(PermissionDeniedError, match="administrator"):
        ao.revoke_task(build_task, "mine")
    revoked = admin.revoke_task(build_task, "CVE in the base image")
    assert revoked["status"] == "REVOKED" and revoked["revoked_by"] == "admin"
    with pytest.raises(ConflictError, match="REVOKED"):
        admin.revoke_task(build_task, "again")
    with pytest.raises(ProvisioningRefusedError,
                       match=r"build task .* was revoked by admin .*: CVE in the base image"):
        _provision(manager, config_id)
    assert any(r["action"] == "task.revoke" and r["details"]["reason"] == "CVE in the base image"
               for r in admin.audit_log(object_id=build_task))

    graph = {"name": "twin-workflow",
             "objects": {"app": {"type": "app", "app_config_id": twin_config["id"]},
                         "input": {"type": "dataset", "dataset_id": world.ids["input"]},
                         "output": {"type": "dataset", "dataset_id": world.ids["output"]}},
             "edges": [{"source": "input", "target": "app", "port": "input"},
                       {"source": "app", "target": "output", "port": "output"}]}
    request = ao.request_approval(ao.create_workflow(graph)["id"])
    for party in request["approvers"]:
        world.clients[party].approve_request(request["id"])
    twin_id = ao.get_final_workflow(request["workflow_id"])["app_config_ids"]["app"]
    with pytest.raises(ProvisioningRefusedError, match="measurements of build .* were revoked"):
        _provision(manager, twin_id)


@pytest.mark.parametrize("reason, message", [
    ("x" * 1001, "at most 1000"),
    ("\ud800", "lone UTF-16 surrogate"),
    ("bell\x07", "a control character"),
    ("esc\x1b[31m", "a control character"),
    ("rlo\u202eevil", "an invisible format character"),
    ("zero\u200bwidth", "an invisible format character"),
    (12, "valid string"),
])
def test_bad_reasons_are_refused_with_422(manager, reason, message):
    world = build_world(manager)
    ao = world.clients["app-owner"]
    request = ao.request_approval(world.ids["draft"])
    final = approve_all(build_world(manager, suffix="-2"))
    tokens = manager.tokens
    task = world.clients["admin"].get_build(world.ids["build"])["task_id"]
    for party, path in (
            ("data-owner", f"/v1/approval_requests/{request['id']}/deny"),
            ("data-owner", f"/v1/workflows/final/graphs/{final['id']}/revoke"),
            ("admin", f"/v1/tasks/{task}/revoke")):
        # the body as a client sends it: a lone surrogate travels as its JSON escape
        body = json.dumps({"reason": reason}).encode("ascii")
        answer = requests.post(manager.url + path, data=body, timeout=10, headers={
            "Authorization": f"Bearer {tokens[party]}", "Content-Type": "application/json"})
        assert answer.status_code == 422, (path, answer.text)
        assert answer.json()["error"] == "ValidationError"
        assert message in answer.json()["message"]
    # nothing was decided
    assert ao.get_approval_request(request["id"])["status"] == "PENDING"
    assert world.clients["admin"].get_final_workflow(final["id"])["status"] == "APPROVED"
    assert world.clients["admin"].get_task(task)["status"] == "APPROVED"
    assert world.clients["admin"].verify_audit()["ok"] is True


def test_a_lone_surrogate_anywhere_in_a_body_is_422_not_500(manager):
    tokens = manager.tokens
    body = ('{"name": "ok", "description": "\\udc80", "location": "http://127.0.0.1:9/b/o", '
            '"credentials": {"query_string": "YQ==", "encryption": {"key": "' + "00" * 32 +
            '"}}}').encode("ascii")
    answer = requests.post(manager.url + "/v1/datasets", data=body, timeout=10, headers={
        "Authorization": f"Bearer {tokens['data-owner']}", "Content-Type": "application/json"})
    assert answer.status_code == 422 and "surrogate" in answer.json()["message"]
    with pytest.raises(NotFoundError):
        manager.client("data-owner").get_dataset("ok")
    answer = requests.post(manager.url + "/v1/approval_requests",
                           data=b'{"workflow_id": "\\ud800"}', timeout=10, headers={
                               "Authorization": f"Bearer {tokens['app-owner']}",
                               "Content-Type": "application/json"})
    assert answer.status_code == 422 and "surrogate" in answer.json()["message"]


def test_a_long_reason_within_the_limit_is_kept_whole(manager):
    world = build_world(manager)
    request = world.clients["app-owner"].request_approval(world.ids["draft"])
    reason = "line one\n\tline two " + "é" * 980
    denied = world.clients["output-owner"].deny_request(request["id"], reason)
    assert denied["reason"] == reason.strip() and denied["status"] == "DENIED"

"""Persistence across restarts, and the hash-chained audit log."""

from __future__ import annotations


from ccm_flow import approve_all, build_world

from nitronb.keys import fingerprint


def test_a_restart_keeps_everything(manager):
    world = build_world(manager)
    final = approve_all(world)
    tokens = manager.tokens
    admin = world.clients["admin"]
    before = {
        "datasets": admin.list_datasets(), "apps": admin.list_apps(),
        "builds": admin.list_builds(), "tasks": admin.list_tasks(),
        "configs": admin.list_app_configs(), "drafts": admin.list_workflows(),
        "finals": admin.list_final_workflows(), "requests": admin.list_approval_requests(),
        "runtime": admin.get_runtime_config(final["app_config_ids"]["app"]),
    }
    manager.restart()
    assert manager.tokens == tokens
    admin = manager.client("admin")
    after = {
        "datasets": admin.list_datasets(), "apps": admin.list_apps(),
        "builds": admin.list_builds(), "tasks": admin.list_tasks(),
        "configs": admin.list_app_configs(), "drafts": admin.list_workflows(),
        "finals": admin.list_final_workflows(), "requests": admin.list_approval_requests(),
        "runtime": admin.get_runtime_config(final["app_config_ids"]["app"]),
    }
    assert after == before
    assert len(after["finals"]) == 1 and after["finals"][0]["status"] == "APPROVED"
    assert admin.verify_audit()["ok"] is True
    # the sealed credentials still open with the kept manager key
    assert admin.get_dataset("conditions")["credentials"]["encryption"]["key_fingerprint"] \
        == fingerprint(world.keys["input"])


def test_the_audit_chain_verifies_and_detects_an_edited_row(manager):
    world = build_world(manager)
    approve_all(world)
    admin = world.clients["admin"]
    log = admin.audit_log(limit=1000)
    assert log[0]["prev_hash"] == "0" * 64
    assert all(b["prev_hash"] == a["hash"] for a, b in zip(log, log[1:]))
    assert {"dataset.create", "app.create", "build.create", "task.approved",
            "app_config.create", "workflow.create", "workflow.submit",
            "approval_request.approve", "workflow.approved"} <= {r["action"] for r in log}
    assert admin.verify_audit() == {"ok": True, "rows": len(log), "head": log[-1]["hash"]}
    target = next(r for r in log if r["action"] == "task.approved")
    manager.sql("UPDATE audit SET actor = 'data-owner' WHERE id = :id", {"id": target["id"]})
    result = admin.verify_audit()
    assert result["ok"] is False and result["bad_row"] == target["id"]
    assert "edited" in result["reason"]


def test_the_audit_chain_detects_deleted_rows(manager):
    admin = manager.client("admin")
    build_world(manager)
    rows = admin.audit_log(limit=1000)
    manager.sql("DELETE FROM audit WHERE id = :id", {"id": rows[-1]["id"]})
    result = admin.verify_audit()
    assert result["ok"] is False and "removed" in result["reason"]
    manager.sql("DELETE FROM audit WHERE id = 3")
    result = admin.verify_audit()
    assert result["ok"] is False and result["bad_row"] == 3


def test_the_audit_limit_must_be_1_to_the_maximum(manager, tmp_path):
    import pytest
    import requests
    from ccm_flow import ServiceManager

    from nitronb.ccm.service import MAX_AUDIT_LIMIT
    from nitronb.errors import ValidationError

    admin = manager.client("admin")
    headers = {"Authorization": f"Bearer {manager.tokens['admin']}"}
    for limit in ("99999999999999999999999", "-1", "0", str(MAX_AUDIT_LIMIT + 1)):
        response = requests.get(manager.url + "/v1/audit", params={"limit": limit},
                                headers=headers, timeout=10)
        assert response.status_code == 422, limit
        body = response.json()
        assert body["error"] == "ValidationError" and "limit" in body["message"]
    with pytest.raises(ValidationError):
        admin.audit_log(limit=-5)
    assert len(admin.audit_log(limit=1)) == 1
    service = ServiceManager(manager.workspace).client("admin")
    for limit in (-5, 0, MAX_AUDIT_LIMIT + 1, 10 ** 23):
        with pytest.raises(ValidationError, match="from 1 to"):
            service.audit_log(limit)
    assert len(service.audit_log(MAX_AUDIT_LIMIT)) >= 1

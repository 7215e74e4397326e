"""Need to know: a user sees what it owns and what belongs to the workflows it is party to; the
administrator sees everything; what a user may not see answers 404, like what does not exist."""

from __future__ import annotations

import json

import pytest
import requests

from ccm_flow import approve_all, build_world, credentials
from nitronb.ccm import CCMClient
from nitronb.errors import NotFoundError
from nitronb.keys import fingerprint, generate_key

LISTS = ("list_datasets", "list_apps", "list_builds", "list_tasks", "list_app_configs",
         "list_workflows", "list_final_workflows", "list_approval_requests",
         "list_runtime_configs")


def _stranger(manager, name="stranger"):
    token = manager.client("admin").create_user(name)["token"]
    return CCMClient(manager.url, token), token


def test_a_user_who_owns_nothing_sees_nothing(manager):
    world = build_world(manager)
    final = approve_all(world)
    config_id = final["app_config_ids"]["app"]
    stranger, token = _stranger(manager)
    for verb in LISTS:
        assert getattr(stranger, verb)() == [], verb
    rows = stranger.audit_log(limit=1000)
    assert [r["action"] for r in rows] == ["user.create"]
    assert rows[0]["object_id"] == stranger.whoami()["user"]["id"]

    # every object of the workflow answers as if it did not exist: by id and by name
    gets = [("get_dataset", world.ids["input"]), ("get_dataset", "conditions"),
            ("get_app", world.ids["app"]), ("get_app", "describe"),
            ("get_build", world.ids["build"]), ("get_task", world.ids["tasks"][0]),
            ("get_app_config", world.ids["config"]), ("get_workflow", world.ids["draft"]),
            ("get_workflow", "conditions-describe"), ("get_final_workflow", final["id"]),
            ("get_approval_request", final["approval_request_id"]),
            ("get_runtime_config", config_id)]
    tokens = {"Authorization": f"Bearer {token}"}
    for verb, ref in gets:
        with pytest.raises(NotFoundError):
            getattr(stranger, verb)(ref)
    hidden = requests.get(f"{manager.url}/v1/datasets/{world.ids['input']}", headers=tokens,
                          timeout=10)
    missing = requests.get(f"{manager.url}/v1/datasets/00000000-0000-0000-0000-000000000000",
                           headers=tokens, timeout=10)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json()["message"] == missing.json()["message"].replace(
        "00000000-0000-0000-0000-000000000000", world.ids["input"])
    with pytest.raises(NotFoundError):
        stranger.approve_request(final["approval_request_id"])
    with pytest.raises(NotFoundError):
        stranger.revoke_workflow(final["id"], "not mine")
    with pytest.raises(NotFoundError):
        stranger.update_dataset("conditions", {"description": "mine now"})
    assert stranger.audit_log(object_id=world.ids["input"]) == []
    # nor can it make itself a party by naming another's objects in a draft of its own
    graph = {"name": "snooping",
             "objects": {"app": {"type": "app", "app_config_id": "describe-conditions"},
                         "input": {"type": "dataset", "dataset_id": "conditions"}},
             "edges": [{"source": "input", "target": "app", "port": "input"}]}
    with pytest.raises(NotFoundError, match="no application configuration"):
        stranger.create_workflow(graph)
    assert stranger.list_datasets() == [] and stranger.list_workflows() == []


def test_owners_see_their_own_and_parties_see_their_workflows(manager):
    do, oo = manager.client("data-owner"), manager.client("output-owner")
    key = generate_key()
    lonely = do.create_dataset({"name": "lonely", "location": "http://127.0.0.1:9/b/lonely",
                                "credentials": credentials(key, "X-Amz-Signature=l")})
    # before any workflow joins them, one owner does not see another's dataset
    assert [d["name"] for d in do.list_datasets()] == ["lonely"]
    assert oo.list_datasets() == []
    with pytest.raises(NotFoundError):
        oo.get_dataset("lonely")

    world = build_world(manager)
    approve_all(world)
    ao, admin = world.clients["app-owner"], world.clients["admin"]
    # a workflow makes its parties see its datasets, app, build, tasks, configuration
    for client in (do, oo, ao):
        assert {d["name"] for d in client.list_datasets()} >= {"conditions", "describe-result"}
        assert [a["name"] for a in client.list_apps()] == ["describe"]
        assert [c["id"] for c in client.list_app_configs()] == [world.ids["config"]]
        assert [b["id"] for b in client.list_builds()] == [world.ids["build"]]
        assert sorted(t["id"] for t in client.list_tasks()) == sorted(world.ids["tasks"])
        assert [w["id"] for w in client.list_workflows()] == [world.ids["draft"]]
        assert len(client.list_runtime_configs()) == 1
    assert "lonely" not in {d["name"] for d in oo.list_datasets() + ao.list_datasets()}
    assert {d["name"] for d in admin.list_datasets()} >= {"lonely", "conditions",
                                                          "describe-result"}
    # the audit log is filtered the same way
    seen = {r["object_id"] for r in oo.audit_log(limit=1000)}
    assert lonely["id"] not in seen and world.ids["input"] in seen
    assert lonely["id"] in {r["object_id"] for r in admin.audit_log(limit=1000)}
    assert lonely["id"] in {r["object_id"] for r in do.audit_log(limit=1000)}


def test_no_key_digit_is_shown_anywhere(manager):
    world = build_world(manager)
    approve_all(world)
    admin = world.clients["admin"]
    shown = json.dumps([admin.list_datasets(), admin.get_dataset("conditions"),
                        admin.audit_log(limit=1000),
                        [admin.get_runtime_config(r["id"]) for r in
                         admin.list_runtime_configs()]])
    for key in world.keys.values():
        assert key[:4] + "…" not in shown and "…" + key[-4:] not in shown
        assert fingerprint(key) in shown
    dataset = admin.get_dataset("conditions")
    assert dataset["credentials"]["encryption"] == {
        "key": "<redacted>", "key_fingerprint": fingerprint(world.keys["input"])}

"""The runtime configuration in the real CCM's shape, its APPCONFIG_ID as Fortanix's client
computes it, node names and configuration item paths (the manager's rules, without HTTP)."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest

import em_client_rule
from ccm_flow import ServiceManager, approve_all, build_world, credentials
from nitronb.ccm import APP_CONFIG_PREFIX, app_config_id, new_node_id, workflow_graph
from nitronb.errors import ConflictError, ValidationError
from nitronb.keys import generate_key

# --- what the manager serves ------------------------------------------------------------------


@pytest.fixture
def local(tmp_path):
    return ServiceManager(tmp_path)


def _two_input_world(local, *, items=None, labels=None):
    """A world whose workflow has two inputs on port ``input`` and generated node names."""
    world = build_world(local)
    do, ao = world.clients["data-owner"], world.clients["app-owner"]
    extra = do.create_dataset({
        "name": "Conditions Data (2021)", "location": "http://127.0.0.1:9/nitronb/input/b.enc",
        "credentials": credentials(generate_key(), "X-Amz-Signature=b")})
    config = ao.create_app_config({
        "name": "describe-two", "image": world.ids["image"], "ports": ["input", "output"],
        "labels": labels or {"zone": "eu", "team": "research", "Älter": "ja"},
        "config_items": items if items is not None else {
            APP_CONFIG_PREFIX + "settings/zeta.txt": "letzte Zeile — ünïcode\n",
            "settings/alpha.json": '{"column": "DESCRIPTION"}'}})
    graph = workflow_graph("two-inputs", config["id"],
                           inputs={"input": [world.ids["input"], extra["id"]]},
                           outputs={"output": world.ids["output"]})
    draft = ao.create_workflow(graph)
    world.ids.update(draft=draft["id"], extra=extra["id"], config2=config["id"])
    final = approve_all(world)
    return world, graph, final


def test_the_served_configuration_has_the_real_ccms_shape(local):
    world, graph, final = _two_input_world(local)
    app_node = next(k for k, o in graph["objects"].items() if o["type"] == "app")
    nodes = {o["dataset_id"]: k for k, o in graph["objects"].items() if o["type"] == "dataset"}
    config_id = final["app_config_ids"][app_node]
    served = world.clients["data-owner"].get_runtime_config(config_id)
    config, extra = served["config"], served["extra"]
    assert list(config) == ["app_config", "labels", "zone_ca", "workflow"]
    assert list(config["workflow"]) == ["workflow_id", "app_name", "port_map"]
    assert config["workflow"]["workflow_id"] == final["id"]
    assert config["workflow"]["app_name"] == app_node
    inputs = sorted([nodes[world.ids["input"]], nodes[world.ids["extra"]]])
    assert config["workflow"]["port_map"] == {
        "input": {inputs[0]: {"dataset": {"id": graph["objects"][inputs[0]]["dataset_id"]}},
                  inputs[1]: {"dataset": {"id": graph["objects"][inputs[1]]["dataset_id"]}}},
        "output": {nodes[world.ids["output"]]: {"dataset": {"id": world.ids["output"]}}}}
    assert list(config["workflow"]["port_map"]["input"]) == inputs
    assert list(config["labels"]) == ["team", "zone", "Älter"]
    assert list(config["app_config"]) == [APP_CONFIG_PREFIX + "settings/alpha.json",
                                          APP_CONFIG_PREFIX + "settings/zeta.txt"]
    zeta = config["app_config"][APP_CONFIG_PREFIX + "settings/zeta.txt"]
    assert base64.b64decode(zeta["contents"]).decode() == "letzte Zeile — ünïcode\n"
    assert config["zone_ca"] == []
    # locations travel in extra, with the credentials redacted for users
    connection = extra["connections"]["input"][nodes[world.ids["extra"]]]["dataset"]
    assert connection["location"] == "http://127.0.0.1:9/nitronb/input/b.enc"
    assert connection["credentials"]["query_string"] == "<redacted>"
    text = json.dumps(served)
    assert "X-Amz-Signature" not in text and world.keys["input"] not in text
    assert "X-Amz-Signature" not in json.dumps(config) and "127.0.0.1" not in json.dumps(config)


def test_an_id_computed_by_fortanixs_client_rule_equals_nitronbs(local):
    world, graph, final = _two_input_world(local)
    (config_id,) = final["app_config_ids"].values()
    served = world.clients["app-owner"].get_runtime_config(config_id)
    assert em_client_rule.config_id(json.dumps(served)) == config_id
    assert app_config_id(served["config"]) == config_id
    assert em_client_rule.hashed_form(served["config"]) == json.dumps(
        served["config"], separators=(",", ":"), ensure_ascii=False)
    # sorted keys are not the rule: the workflow's fields keep their stored order
    text = json.dumps(served["config"], separators=(",", ":"), ensure_ascii=False, sort_keys=True)
    assert hashlib.sha256(text.encode("utf-8")).hexdigest() != config_id


def test_zone_ca_holds_the_trusted_roots(tmp_path):
    from nitronb.ccm.provisioning import NitroVerifier
    from nitronb.enclave.nsm import LocalNSM

    nsm = LocalNSM(tmp_path / "nsm")
    (tmp_path / "ws").mkdir()
    local = ServiceManager(tmp_path / "ws", verifier=NitroVerifier([nsm.root_path]))
    world = build_world(local)
    config_id = approve_all(world)["app_config_ids"]["app"]
    served = world.clients["admin"].get_runtime_config(config_id)
    assert served["config"]["zone_ca"] == [nsm.root_pem.decode("ascii")]
    assert em_client_rule.config_id(served) == config_id


def test_a_runtime_configuration_of_another_shape_is_refused_with_a_hint(local):
    world = build_world(local)
    config_id = approve_all(world)["app_config_ids"]["app"]
    store = local.service.store
    workflow_id, ac_id, _, extra = store.get_runtime_config(config_id)
    store.put_runtime_config("ab" * 32, workflow_id, ac_id, '{"app_config_id":"x","ports":{}}',
                             extra, "2026-01-01T00:00:00Z")
    with pytest.raises(ConflictError, match="not in the real CCM's shape") as caught:
        world.clients["admin"].get_runtime_config("ab" * 32)
    assert "approval again" in caught.value.hint


# --- node names ---------------------------------------------------------------------------------


def test_workflow_graph_draws_fresh_node_names():
    graph = workflow_graph("g", "cfg", inputs={"input": ["d1", "d2"]}, outputs={"output": "d3"},
                           description="d")
    keys = list(graph["objects"])
    assert len(set(keys)) == 4
    for key in keys:
        assert len(key) == 9 and key[0].isalpha() and key.isalnum() and key == key.lower()
    app = keys[0]
    assert graph["objects"][app] == {"type": "app", "app_config_id": "cfg"}
    assert graph["edges"] == [{"source": keys[1], "target": app, "port": "input"},
                              {"source": keys[2], "target": app, "port": "input"},
                              {"source": app, "target": keys[3], "port": "output"}]
    assert len({new_node_id() for _ in range(200)}) == 200


@pytest.mark.parametrize("node", ["a/b", "..", "a..b", ".hidden", "-x", "a\x00b", "a\x1bb",
                                  "", "x" * 65, "a b"])
def test_unsafe_node_names_are_refused(local, node):
    world = build_world(local)
    graph = {"name": "bad-node",
             "objects": {"app": {"type": "app", "app_config_id": world.ids["config"]},
                         node: {"type": "dataset", "dataset_id": world.ids["input"]},
                         "out": {"type": "dataset", "dataset_id": world.ids["output"]}},
             "edges": [{"source": node, "target": "app", "port": "input"},
                       {"source": "app", "target": "out", "port": "output"}]}
    with pytest.raises(ValidationError, match="not a safe folder name"):
        world.clients["app-owner"].create_workflow(graph)


# --- configuration item paths -------------------------------------------------------------------


def _app_config(local, items):
    world = build_world(local)
    return world.clients["app-owner"].create_app_config(
        {"name": "items", "image": world.ids["image"], "ports": ["input", "output"],
         "config_items": items})


def test_items_are_keyed_by_absolute_paths_under_the_app_config_folder(local):
    config = _app_config(local, {APP_CONFIG_PREFIX + "conf/a.txt": "a", "conf/b.txt": "b"})
    assert config["config_items"] == {APP_CONFIG_PREFIX + "conf/a.txt": "a",
                                      APP_CONFIG_PREFIX + "conf/b.txt": "b"}


@pytest.mark.parametrize("path, message", [
    ("/etc/passwd", "outside the enclave's app-config folder"),
    ("/opt/fortanix/enclave-os/app-config/rwx/a", "outside the enclave's app-config folder"),
    (APP_CONFIG_PREFIX + "../ro/a", "without '..'"),
    (APP_CONFIG_PREFIX + "a/./b", "without '..'"),
    (APP_CONFIG_PREFIX, "without '..'"),
    (APP_CONFIG_PREFIX + "a\x00b", "NUL"),
    (APP_CONFIG_PREFIX + "input/node/dataset/credentials.bin", "folder of port 'input'"),
])
def test_item_path_tricks_are_refused(local, path, message):
    with pytest.raises(ValidationError, match=message):
        _app_config(local, {path: "x"})


def test_two_spellings_of_one_item_are_refused(local):
    with pytest.raises(ValidationError, match="same file"):
        _app_config(local, {"a.txt": "1", APP_CONFIG_PREFIX + "a.txt": "2"})

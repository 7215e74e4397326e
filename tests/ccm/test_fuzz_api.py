"""Fuzzing the manager's JSON bodies over HTTP: every POST, PUT and PATCH route of a running
manager gets generated bodies (valid ones with a field changed, arbitrary JSON, broken bytes),
as each party and anonymously. Never a 5xx; every 4xx carries ``{"error", "message"}``.
Settings come from the profile in ``tests/conftest.py``."""

from __future__ import annotations

import base64
import json
import math
from typing import Any, NamedTuple
from urllib.parse import quote

import requests
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ccm_flow import PCRS, build_world, credentials, measurements
from nitronb.ccm.api import router
from nitronb.keys import generate_key

class _Write(NamedTuple):
    method: str
    template: str


#: every route that takes a body, as the manager's router declares it
WRITES = sorted(_Write(method, route.path) for route in router.routes
                for method in getattr(route, "methods", None) or ()
                if method in ("POST", "PUT", "PATCH"))
PARTIES = ("data-owner", "output-owner", "app-owner", "admin")
_WORLDS: dict[str, dict[str, Any]] = {}
#: who may call each route (the first prefix that matches); anonymous for the rest
RIGHT = [("/v1/users", "admin"), ("/v1/datasets", "data-owner"), ("/v1/tasks", "admin"),
         ("/v1/approval_requests/", "data-owner"), ("/v1/runtime", None), ("/v1/", "app-owner")]


def _scaled(fraction: float) -> settings:
    return settings(max_examples=max(20, int(settings.default.max_examples * fraction)))


def _world(manager) -> dict[str, Any]:
    """Objects to aim at (built once per manager): ids by kind, and a valid body per route."""
    if manager.url not in _WORLDS:
        world = build_world(manager)
        request = world.clients["app-owner"].request_approval(world.ids["draft"])
        ids = {**world.ids, "request": request["id"], "final": request["workflow_id"]}
        key = generate_key()
        valid = {
            "/v1/users": {"name": "someone", "roles": ["user"]},
            "/v1/datasets": {"name": "fuzzed", "description": "d", "labels": {"a": "b"},
                             "location": "http://127.0.0.1:9/nitronb/x.enc",
                             "long_description": "# x",
                             "credentials": credentials(key, "X-Amz-Signature=x")},
            "/v1/datasets/{id}": {"description": "changed", "labels": {"k": "v"}},
            "/v1/apps": {"name": "fuzz-app", "image": "nitronb/fuzz", "domain": "fuzz.local"},
            "/v1/builds": {"app_id": ids["app"], "image": "nitronb/fuzz:1-enclave",
                           "measurements": measurements()},
            "/v1/tasks/{id}/deny": {"reason": "no"},
            "/v1/app_configs": {"name": "fuzz-config", "image": ids["image"],
                                "ports": ["input", "output"], "labels": {"t": "r"},
                                "config_items": {"settings/x.txt": "X"}},
            "/v1/workflows/draft/graphs": {
                "name": "fuzz-flow", "objects": {
                    "app": {"type": "app", "app_config_id": ids["config"]},
                    "input": {"type": "dataset", "dataset_id": ids["input"]}},
                "edges": [{"source": "input", "target": "app", "port": "input"}]},
            "/v1/approval_requests": {"workflow_id": ids["draft"]},
            "/v1/approval_requests/{id}/deny": {"reason": "no"},
            "/v1/runtime/app_configs/{id}/provision": {
                "attestation_document": base64.b64encode(b"doc").decode(),
                "nonce": base64.b64encode(bytes(32)).decode()},
        }
        valid["/v1/workflows/draft/graphs/{id}"] = valid["/v1/workflows/draft/graphs"]
        _WORLDS[manager.url] = {"ids": ids, "valid": valid, "tokens": manager.tokens}
    return _WORLDS[manager.url]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
    | st.sampled_from(["", "..", "a/b", "\x00", "é" * 70, "PENDING", "admin", "input"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner,
                                                                 max_size=4),
    max_leaves=16)


def _paths(value: Any) -> list[tuple]:
    """Every path to a value inside nested dicts and lists."""
    out: list[tuple] = [()]
    if isinstance(value, dict):
        for key, inner in value.items():
            out += [(key, *rest) for rest in _paths(inner)]
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            out += [(index, *rest) for rest in _paths(inner)]
    return out


def _replaced(value: Any, path: tuple, new: Any, delete: bool) -> Any:
    if not path:
        return new
    copy = dict(value) if isinstance(value, dict) else list(value)
    if len(path) == 1 and delete:
        del copy[path[0]]
    else:
        copy[path[0]] = _replaced(copy[path[0]], path[1:], new, delete)
    return copy


@st.composite
def requests_(draw) -> dict[str, Any]:
    """A route, a path id, a party (or none) and a body: the route's valid body with one value
    replaced, removed or added, any JSON, or bytes that are not JSON."""
    route = draw(st.sampled_from(WRITES))
    kind = draw(st.sampled_from(["changed", "changed", "any", "bytes"]))
    if kind == "changed":
        body: Any = draw(st.just(None))  # filled in by the test, which knows the valid body
    elif kind == "any":
        body = draw(json_values)
    else:
        body = draw(st.binary(max_size=60) | st.sampled_from(
            [b"{", b"[1,", b'{"a": NaN}', b"1e999999", b'"\xff"', b"{}" * 3, b"\xef\xbb\xbf{}",
             b"[" * 50 + b"]" * 50, b'{"name": "\\ud800"}']))
    return {"route": route.template, "kind": kind, "body": body,
            "path": draw(st.integers(0, 10)), "new": draw(json_values),
            "delete": draw(st.booleans()), "add": draw(st.text(max_size=10)),
            "target": draw(st.sampled_from(["input", "output", "app", "build", "tasks",
                                            "config", "draft", "request", "final", "other"])),
            "other": draw(st.text(min_size=1, max_size=20)),
            "party": draw(st.sampled_from(["right"] * 4 + [*PARTIES, None, "bad"]))}


def _send(manager, case: dict[str, Any]) -> requests.Response:
    world = _world(manager)
    template = case["route"]
    ids = world["ids"]
    target = ids.get(case["target"], case["other"])
    target = target[0] if isinstance(target, list) and target else target
    if case["target"] == "config" and "runtime" in template:
        target = ids.get("final", "x")
    url = manager.url + template.replace("{id}", quote(str(target or "x"), safe=""))
    if case["kind"] == "changed":
        valid = world["valid"].get(template, {})
        paths = _paths(valid)
        path = paths[case["path"] % len(paths)]
        if not path or not case["delete"] or not isinstance(valid, dict):
            body = _replaced(valid, path, case["new"], False)
            if isinstance(body, dict) and case["add"]:
                body = {**body, case["add"]: case["new"]}
        else:
            body = _replaced(valid, path, None, True)
        data = json.dumps(body, allow_nan=True).encode("utf-8")
    elif case["kind"] == "any":
        data = json.dumps(case["body"], allow_nan=True).encode("utf-8")
    else:
        data = case["body"]
    headers = {"Content-Type": "application/json"}
    if case["party"] == "right":
        case = {**case, "party": next((p for prefix, p in RIGHT if template.startswith(prefix)),
                                      None)}
    if case["party"] == "bad":
        headers["Authorization"] = "Bearer not-a-token"
    elif case["party"]:
        headers["Authorization"] = "Bearer " + world["tokens"][case["party"]]
    method = next(r.method for r in WRITES if r.template == template)
    return requests.request(method, url, data=data, headers=headers, timeout=60)


def _assert_answer(reply: requests.Response) -> None:
    assert reply.status_code < 500, reply.text[:500]
    if reply.status_code >= 400:
        body = reply.json()
        assert isinstance(body, dict) and isinstance(body.get("error"), str) \
            and isinstance(body.get("message"), str), body


@_scaled(1)
@given(requests_())
@example({"route": "/v1/datasets", "kind": "changed", "body": None, "path": 0,
          "new": math.nan, "delete": False, "add": "", "target": "other", "other": "x",
          "party": "data-owner"})
@example({"route": "/v1/users", "kind": "changed", "body": None, "path": 3,  # roles [[]]:
          "new": [], "delete": False, "add": "", "target": "input",  # once a TypeError
          "other": "0", "party": "right"})
def test_every_write_route_answers_generated_bodies_below_500(manager, case):
    _assert_answer(_send(manager, case))


def test_the_valid_bodies_are_accepted(manager):
    """The templates the fuzzing starts from are valid, so that one changed field tests the
    route's checks of that field, not an error earlier on."""
    world = _world(manager)
    owner = {"/v1/users": "admin", "/v1/datasets": "data-owner", "/v1/apps": "app-owner",
             "/v1/builds": "app-owner", "/v1/app_configs": "app-owner",
             "/v1/workflows/draft/graphs": "app-owner"}
    for template, party in owner.items():
        reply = _send(manager, {"route": template, "kind": "any", "body": world["valid"][template],
                                "target": "other", "other": "x", "party": party})
        assert reply.status_code == 201, (template, reply.text)

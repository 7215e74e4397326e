"""Fortanix's client rule for APPCONFIG_ID, written for the tests from em-client-rust's models.

em-client reads the served runtime configuration into typed models and hashes serde_json's
compact form of the ``config`` part: ``HashedConfig`` (fields ``app_config``, ``labels``,
``zone_ca``, optional ``workflow``, in that order, unknown fields refused), whose maps are
``BTreeMap`` (keys in byte order) and whose ``zone_ca`` is a ``BTreeSet`` (sorted, no repeats);
``workflow`` is ``ApplicationConfigWorkflow`` (``workflow_id`` a UUID, ``app_name``,
``port_map`` port → node → ``{"dataset": {"id", "acct_id"?, "group_id"?}}`` or
``{"application": {"acct_id"?, "group_id"?}}``, optional ``app_acct_id`` and ``app_group_id``;
unknown fields refused). This is an independent implementation, so that a test can compare
nitronb's id with the one Fortanix's client computes.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any


class Refused(ValueError):
    """em-client would not deserialise this configuration."""


def _map(value: Any, what: str, item) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Refused(f"{what} is not a map")
    return {key: item(value[key], f"{what}.{key}")
            for key in sorted(value, key=lambda k: k.encode("utf-8"))}


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise Refused(f"{what} is not a string")
    return value


def _uuid(value: Any, what: str) -> str:
    try:
        return str(uuid.UUID(_string(value, what)))
    except ValueError:
        raise Refused(f"{what} is not a UUID") from None


def _fields(value: Any, what: str, required: tuple, optional: tuple, deny: bool) -> dict:
    if not isinstance(value, dict):
        raise Refused(f"{what} is not an object")
    unknown = set(value) - set(required) - set(optional)
    if deny and unknown:
        raise Refused(f"{what} has unknown fields {sorted(unknown)}")
    missing = [name for name in required if name not in value]
    if missing:
        raise Refused(f"{what} lacks {missing}")
    return value


def _ids(value: dict, what: str, names: tuple) -> dict[str, str]:
    return {name: _uuid(value[name], f"{what}.{name}") for name in names
            if value.get(name) is not None}


def _port(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or len(value) != 1:
        raise Refused(f"{what} is not one of dataset / application")
    (kind, body), = value.items()
    if kind == "dataset":
        body = _fields(body, what, ("id",), ("acct_id", "group_id"), True)
        return {"dataset": {"id": _uuid(body["id"], what),
                            **_ids(body, what, ("acct_id", "group_id"))}}
    if kind == "application":
        body = _fields(body, what, (), ("acct_id", "group_id"), True)
        return {"application": _ids(body, what, ("acct_id", "group_id"))}
    raise Refused(f"{what} is of unknown kind {kind!r}")


def _workflow(value: Any) -> dict[str, Any]:
    body = _fields(value, "workflow", ("workflow_id", "app_name", "port_map"),
                   ("app_acct_id", "app_group_id"), True)
    return {"workflow_id": _uuid(body["workflow_id"], "workflow.workflow_id"),
            "app_name": _string(body["app_name"], "workflow.app_name"),
            "port_map": _map(body["port_map"], "port_map",
                             lambda nodes, what: _map(nodes, what, _port)),
            **_ids(body, "workflow", ("app_acct_id", "app_group_id"))}


def _contents(value: Any, what: str) -> dict[str, str]:
    body = _fields(value, what, (), ("contents",), False)
    return {} if body.get("contents") is None else {"contents": _string(body["contents"], what)}


def hashed_form(config: Any) -> str:
    """The compact JSON em-client hashes for a served ``config``."""
    body = _fields(config, "config", ("app_config", "labels", "zone_ca"), ("workflow",), True)
    if not isinstance(body["zone_ca"], list):
        raise Refused("zone_ca is not a list")
    typed = {"app_config": _map(body["app_config"], "app_config", _contents),
             "labels": _map(body["labels"], "labels", _string),
             "zone_ca": sorted({_string(c, "zone_ca") for c in body["zone_ca"]},
                               key=lambda c: c.encode("utf-8"))}
    if body.get("workflow") is not None:
        typed["workflow"] = _workflow(body["workflow"])
    return json.dumps(typed, separators=(",", ":"), ensure_ascii=False)


def config_id(served: str | dict[str, Any]) -> str:
    """APPCONFIG_ID as em-client computes it over a served runtime configuration (text or
    parsed ``{"config", "extra"}``)."""
    document = json.loads(served) if isinstance(served, str) else served
    return hashlib.sha256(hashed_form(document["config"]).encode("utf-8")).hexdigest()

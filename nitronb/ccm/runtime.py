"""The runtime configuration in the real CCM's shape (DESIGN §3.5) and the names it holds.

A runtime configuration is ``{"config": HASHED, "extra": {"connections": …}}`` where ::

    HASHED = {"app_config": {"<absolute path>": {"contents": "<base64>"}},
              "labels": {"<key>": "<value>"},
              "zone_ca": ["<PEM>", …],
              "workflow": {"workflow_id": "<uuid>", "app_name": "<app node>",
                           "port_map": {"<port>": {"<node>": {"dataset": {"id": "<uuid>"}}}}}}

and ``extra["connections"][port][node]["dataset"]`` is ``{"location", "credentials"}``.
APPCONFIG_ID is the SHA-256 of ``HASHED`` as compact JSON with its keys in stored order. The
manager stores every map with its keys sorted and ``zone_ca`` sorted without repeats, in the
field order above, so that Fortanix's client (em-client-rust, which re-serialises the served
configuration through sorted maps and sets) computes the same id.

Node names are the keys of a workflow graph's objects. Like the real CCM's user interface, the
client draws them (:func:`new_node_id`, :func:`workflow_graph`) when it drafts a graph; the
manager only checks them (:func:`check_node_name`), because a dataset's node name becomes its
folder ``APP_CONFIG_DIR/<port>/<node>/dataset/`` in the enclave.

Configuration items are keyed by absolute paths under :data:`APP_CONFIG_PREFIX`
(:func:`item_path`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import string
from typing import Any, Iterable, Mapping

from nitronb.errors import ValidationError

#: the enclave's app-config folder; configuration items live below it
APP_CONFIG_DIR = "/opt/fortanix/enclave-os/app-config/rw"
APP_CONFIG_PREFIX = APP_CONFIG_DIR + "/"

NODE_ID_LENGTH = 9
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_NODE_FIRST = string.ascii_lowercase
_NODE_REST = string.ascii_lowercase + string.digits
_ITEM_PATH_LIMIT = 1024


# --- node names -----------------------------------------------------------------------------


def new_node_id() -> str:
    """A fresh node name like the real CCM's (``cxhcfxdvl``): a lower-case letter, then eight
    lower-case letters or digits."""
    return secrets.choice(_NODE_FIRST) + "".join(secrets.choice(_NODE_REST)
                                                  for _ in range(NODE_ID_LENGTH - 1))


def check_node_name(name: Any, *, what: str = "node name") -> str:
    """``name`` if it is a safe node name (1–64 of letters, digits, ``.``, ``_``, ``-``, not
    beginning with ``.`` or ``-``, no ``..``); ValidationError otherwise."""
    if not isinstance(name, str) or not _NODE.match(name) or ".." in name:
        raise ValidationError(
            f"{what} {name!r} is not a safe folder name: use 1 to 64 letters, digits, '.', '_' "
            "or '-', beginning with a letter or digit (no '/', '..', NUL or control characters).",
            hint="Let nitronb.ccm.workflow_graph draw the node names.")
    return name


def workflow_graph(name: str, app_config: str, *, inputs: Mapping[str, str | Iterable[str]],
                   outputs: Mapping[str, str | Iterable[str]], description: str = ""
                   ) -> dict[str, Any]:
    """A workflow draft payload whose objects are keyed by fresh node names.

    ``app_config`` is an application configuration's id or name; ``inputs`` and ``outputs`` map
    a port name to a dataset id or name (or several). The app's node comes first, then the
    datasets in the order given. Returns ``{"name", "description", "objects", "edges"}``.
    """
    taken: set[str] = set()

    def node() -> str:
        while (candidate := new_node_id()) in taken:
            pass
        taken.add(candidate)
        return candidate

    app = node()
    objects: dict[str, dict[str, Any]] = {app: {"type": "app", "app_config_id": app_config}}
    edges: list[dict[str, str]] = []
    for ports, inward in ((inputs, True), (outputs, False)):
        for port, refs in ports.items():
            for ref in ([refs] if isinstance(refs, str) else list(refs)):
                key = node()
                objects[key] = {"type": "dataset", "dataset_id": ref}
                edges.append({"source": key, "target": app, "port": port} if inward
                             else {"source": app, "target": key, "port": port})
    return {"name": name, "description": description, "objects": objects, "edges": edges}


# --- configuration item paths ---------------------------------------------------------------


def item_path(path: Any, port_names: Iterable[str] = ()) -> str:
    """The absolute path of a configuration item under :data:`APP_CONFIG_PREFIX`.

    A relative path is taken relative to the app-config folder. Refused (ValidationError): a
    path outside the prefix, empty, ``.`` or ``..`` parts, ``\\``, NUL or control characters,
    and a first part that is a port's name (the port's dataset folders live there).
    """
    if not isinstance(path, str) or not path:
        raise ValidationError(f"configuration item path {path!r} must be a non-empty string.")
    if len(path) > _ITEM_PATH_LIMIT:
        raise ValidationError(f"configuration item path is {len(path)} characters long; at most "
                              f"{_ITEM_PATH_LIMIT}.")
    if any(ord(c) < 32 or ord(c) == 127 for c in path) or "\\" in path:
        raise ValidationError(f"unsafe configuration item path {path!r}: no NUL, control "
                              "characters or '\\'.")
    if path.startswith("/"):
        if not path.startswith(APP_CONFIG_PREFIX):
            raise ValidationError(
                f"configuration item path {path!r} is outside the enclave's app-config folder: "
                f"an absolute path must begin with {APP_CONFIG_PREFIX}.")
        relative = path[len(APP_CONFIG_PREFIX):]
    else:
        relative = path
    parts = relative.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise ValidationError(f"unsafe configuration item path {path!r}: it must name a file "
                              f"below {APP_CONFIG_PREFIX} without '..', '.' or empty parts.")
    if parts[0] in set(port_names):
        raise ValidationError(f"configuration item {path!r} would write into the folder of port "
                              f"{parts[0]!r}, where the datasets' credentials go; choose "
                              "another path.")
    return APP_CONFIG_PREFIX + relative


# --- the hashed configuration ---------------------------------------------------------------


def _sorted_map(mapping: Mapping[str, Any]) -> dict[str, Any]:
    return {key: mapping[key] for key in sorted(mapping)}


def hashed_config(*, items: Mapping[str, str], labels: Mapping[str, str],
                  zone_ca: Iterable[str], workflow_id: str, app_node: str,
                  port_map: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The ``config`` part in stored (canonical) order.

    ``items`` maps absolute paths to text contents (carried base64-encoded as UTF-8);
    ``port_map`` maps a port to ``{node: dataset id}``.
    """
    return {
        "app_config": {path: {"contents": base64.b64encode(items[path].encode("utf-8"))
                              .decode("ascii")} for path in sorted(items)},
        "labels": _sorted_map(labels),
        "zone_ca": sorted(set(zone_ca)),
        "workflow": {
            "workflow_id": workflow_id,
            "app_name": app_node,
            "port_map": {port: {node: {"dataset": {"id": port_map[port][node]}}
                                for node in sorted(port_map[port])}
                         for port in sorted(port_map)},
        },
    }


def connections(locations: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """``extra`` without credentials: ``{"connections": {port: {node: {"dataset":
    {"location"}}}}}`` from ``{port: {node: location}}``."""
    return {"connections": {port: {node: {"dataset": {"location": locations[port][node]}}
                                   for node in sorted(locations[port])}
                            for port in sorted(locations)}}


def dataset_nodes(config: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(port, node, dataset id)`` of every dataset in a hashed config's ``port_map``."""
    out = []
    for port, nodes in (config.get("workflow") or {}).get("port_map", {}).items():
        for node, target in nodes.items():
            if isinstance(target, Mapping) and isinstance(target.get("dataset"), Mapping):
                out.append((port, node, target["dataset"]["id"]))
    return out


def is_ccm_shape(config: Any) -> bool:
    """True when ``config`` has the hashed config's fields (and no others)."""
    return (isinstance(config, Mapping)
            and set(config) <= {"app_config", "labels", "zone_ca", "workflow"}
            and {"app_config", "labels", "zone_ca"} <= set(config))


def app_config_id(config: Mapping[str, Any]) -> str:
    """APPCONFIG_ID: SHA-256 of the config's compact JSON, keys in stored order, lower-case hex
    (DESIGN §3.5)."""
    text = json.dumps(config, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


__all__ = ["APP_CONFIG_DIR", "APP_CONFIG_PREFIX", "new_node_id", "check_node_name",
           "workflow_graph", "item_path", "hashed_config", "connections", "dataset_nodes",
           "is_ccm_shape", "app_config_id"]

"""The OpenAPI 3 description served at ``/openapi.json``, derived from the route table."""

from __future__ import annotations

import re
from typing import Any, Sequence

_STR = {"type": "string"}
_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/users"): {"required": ["name"], "properties": {
        "name": _STR, "roles": {"type": "array", "items": {"enum": ["user", "admin"]}}}},
    ("POST", "/v1/datasets"): {"required": ["name", "location", "credentials"], "properties": {
        "name": _STR, "description": _STR, "labels": _MAP, "location": _STR,
        "long_description": _STR,
        "credentials": {"type": "object", "required": ["query_string", "encryption"],
                        "properties": {"query_string": _STR,
                                       "encryption": {"type": "object",
                                                      "properties": {"key": _STR}}}}}},
    ("POST", "/v1/apps"): {"required": ["name", "image", "domain"], "properties": {
        "name": _STR, "image": _STR, "domain": _STR, "description": _STR}},
    ("POST", "/v1/builds"): {"required": ["app_id", "image", "measurements"], "properties": {
        "app_id": _STR, "image": _STR,
        "measurements": {"type": "object", "properties": {
            "hash_algorithm": {"enum": ["Sha384"]}, "pcr0": _STR, "pcr1": _STR, "pcr2": _STR}}}},
    ("POST", "/v1/app_configs"): {"required": ["name", "image", "ports"], "properties": {
        "name": _STR, "description": _STR, "image": _STR, "build_id": _STR, "labels": _MAP,
        "ports": {"oneOf": [{"type": "array", "items": _STR},
                            {"type": "object", "additionalProperties": {"enum": ["in", "out"]}}]},
        "config_items": {**_MAP, "description": "file contents keyed by absolute paths "
                                                "under /opt/fortanix/enclave-os/app-config/rw/"}}},
    ("POST", "/v1/workflows/draft/graphs"): {"required": ["name", "objects", "edges"],
                                             "properties": {
        "name": _STR, "description": _STR,
        "objects": {"type": "object", "description": "objects keyed by node name (letters, "
                    "digits, '.', '_', '-'; a dataset's node is its folder in the enclave)",
                    "additionalProperties": {"type": "object", "properties": {
            "type": {"enum": ["app", "dataset"]}, "app_config_id": _STR, "dataset_id": _STR}}},
        "edges": {"type": "array", "items": {"type": "object", "properties": {
            "source": _STR, "target": _STR, "port": _STR}}}}},
    ("POST", "/v1/approval_requests"): {"required": ["workflow_id"],
                                        "properties": {"workflow_id": _STR}},
    ("POST", "/v1/approval_requests/{id}/deny"): {"required": ["reason"],
                                                  "properties": {"reason": _STR}},
    ("POST", "/v1/tasks/{id}/deny"): {"properties": {"reason": _STR}},
    ("POST", "/v1/tasks/{id}/revoke"): {"required": ["reason"], "properties": {"reason": _STR}},
    ("POST", "/v1/workflows/final/graphs/{id}/revoke"): {"required": ["reason"],
                                                         "properties": {"reason": _STR}},
    ("POST", "/v1/runtime/app_configs/{id}/provision"): {
        "required": ["attestation_document"],
        "properties": {"attestation_document": {"type": "string", "format": "byte"},
                       "nonce": {"type": "string", "format": "byte"}}},
}
_ERRORS = {"401": "no or unknown bearer token", "403": "not allowed",
           "404": "no such object", "409": "the object's state forbids it",
           "422": "invalid content"}


def openapi(routes: Sequence[Any]) -> dict[str, Any]:
    """The OpenAPI document for ``routes``."""
    from nitronb import __version__

    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "responses": {str(route.status): {"description": "JSON"},
                          **{k: {"description": v} for k, v in _ERRORS.items()}},
        }
        params = re.findall(r"\{(\w+)\}", route.template)
        if params:
            op["parameters"] = [{"name": p, "in": "path", "required": True, "schema": _STR}
                                for p in params]
        if not route.auth:
            op["security"] = []
        schema = _BODIES.get((route.method, route.template))
        if schema:
            op["requestBody"] = {"required": True, "content": {
                "application/json": {"schema": {"type": "object", **schema}}}}
        paths.setdefault(route.template, {})[route.method.lower()] = op
    return {
        "openapi": "3.0.3",
        "info": {"title": "nitronb manager (CCM-shaped API)", "version": __version__},
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": paths,
    }

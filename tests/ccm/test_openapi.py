"""The manager's OpenAPI document describes the error bodies and the bodies it enforces."""

from __future__ import annotations

from ccm_flow import ServiceManager

from nitronb.ccm._checks import REASON_LIMIT
from nitronb.ccm.api import create_app


def test_errors_are_documented_with_the_body_the_server_sends(tmp_path):
    doc = create_app(ServiceManager(tmp_path / "ws").service).openapi()
    schemas = doc["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert schemas["ErrorOut"]["required"] == ["error", "message"]
    assert schemas["ErrorOut"]["properties"]["hint"]["type"] == "string"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            for status in ("401", "404", "422", "500"):
                content = op["responses"][status]["content"]
                assert [c["schema"] for t, c in content.items() if t.startswith(
                    "application/json")] == [{"$ref": "#/components/schemas/ErrorOut"}], \
                    (method, path, status)


def test_a_revocation_documents_its_required_reason(tmp_path):
    doc = create_app(ServiceManager(tmp_path / "ws").service).openapi()
    schemas = doc["components"]["schemas"]
    for path in ("/v1/tasks/{id}/revoke", "/v1/workflows/final/graphs/{id}/revoke",
                 "/v1/approval_requests/{id}/deny"):
        body = doc["paths"][path]["post"]["requestBody"]
        assert body["required"] is True
        ref = body["content"]["application/json"]["schema"]
        name = [r["$ref"] for r in ref.get("anyOf", [ref]) if "$ref" in r][0].rsplit("/", 1)[1]
        assert schemas[name]["required"] == ["reason"]
        reason = schemas[name]["properties"]["reason"]
        assert (reason["type"], reason["minLength"], reason["maxLength"]) == \
            ("string", 1, REASON_LIMIT)

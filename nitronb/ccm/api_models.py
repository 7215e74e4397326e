"""The manager's request bodies as pydantic models: checked by the HTTP layer for shape and
types, documented in the generated OpenAPI document.

The service checks their content (names, URLs, keys, graphs) and answers 422 with a message
naming what is wrong; the shapes here only guard types. Unknown fields are kept and passed on:
the service decides what it ignores or refuses."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Text = str | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="allow")

    def payload(self) -> dict[str, Any]:
        """The fields the client sent, as a dict for the service's verb."""
        return self.model_dump(exclude_unset=True)


class UserIn(_Body):
    name: Text = None
    roles: list[Literal["user", "admin"]] | None = None


class Encryption(_Body):
    key: Text = Field(None, description="the dataset's AES-256 key: 64 hex characters")


class Credentials(_Body):
    query_string: Text = Field(None, description="base64 of the presigned URL's query string")
    encryption: Encryption | None = None


class DatasetIn(_Body):
    name: Text = None
    description: Text = None
    labels: dict[str, str] | None = None
    location: Text = Field(None, description="http(s) URL of the object, without a query")
    long_description: Text = None
    credentials: Credentials | None = None


class DatasetChange(_Body):
    """Only the fields sent change; a new location needs its credentials."""

    description: Text = None
    labels: dict[str, str] | None = None
    long_description: Text = None
    location: Text = None
    credentials: Credentials | None = None


class AppIn(_Body):
    name: Text = None
    image: Text = Field(None, description="the image repository")
    domain: Text = None
    description: Text = None


class Measurements(_Body):
    hash_algorithm: Text = Field(None, description="Sha384")
    pcr0: Text = None
    pcr1: Text = None
    pcr2: Text = None


class BuildIn(_Body):
    app_id: Text = Field(None, description="the app's id or name")
    image: Text = None
    measurements: Measurements | None = None


class AppConfigIn(_Body):
    name: Text = None
    description: Text = None
    image: Text = None
    build_id: Text = None
    labels: dict[str, str] | None = None
    ports: list[str] | dict[str, Literal["in", "out"]] | None = Field(
        None, description="port names (input…/output…) or {name: 'in' | 'out'}")
    config_items: dict[str, str] | None = Field(
        None, description="file contents keyed by absolute paths under "
                          "/opt/fortanix/enclave-os/app-config/rw/")


class Node(_Body):
    type: Text = Field(None, description="app or dataset")
    app_config_id: Text = None
    dataset_id: Text = None


class Edge(_Body):
    source: Text = None
    target: Text = None
    port: Text = None


class WorkflowIn(_Body):
    name: Text = None
    description: Text = None
    objects: dict[str, Node] | None = Field(
        None, description="objects keyed by node name (letters, digits, '.', '_', '-'; a "
                          "dataset's node is its folder in the enclave)")
    edges: list[Edge] | None = None


class ApprovalRequestIn(_Body):
    workflow_id: Text = Field(None, description="the draft's id or name")


class OptionalReason(_Body):
    reason: Text = None


def _required_reason(schema: dict[str, Any]) -> None:
    from nitronb.ccm._checks import REASON_LIMIT

    schema.clear()
    schema.update({"type": "string", "minLength": 1, "maxLength": REASON_LIMIT,
                   "description": f"why (1 to {REASON_LIMIT} characters, no control characters "
                                  "other than tab and newline); shown to the other parties"})


class Reason(_Body):
    """The body of a revocation or a decline: its reason is required (422 without it)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"required": ["reason"]})
    reason: Text = Field(None, json_schema_extra=_required_reason)


def _optional_hint(schema: dict[str, Any]) -> None:
    schema.clear()
    schema.update({"type": "string", "description": "what to do about it (absent when there "
                                                    "is nothing to add)"})


class ErrorOut(BaseModel):
    """Every error's body."""

    error: str = Field(description="the error's kind, e.g. ValidationError, NotFoundError")
    message: str = Field(description="what happened, in one line")
    hint: str | None = Field(None, json_schema_extra=_optional_hint)


class ProvisionIn(_Body):
    attestation_document: Text = Field(None, description="base64 of the COSE_Sign1 document")
    nonce: Text = Field(None, description="base64 of a nonce from /v1/runtime/nonces")

"""A client of the manager's HTTP API with the service's verbs; errors come back as CCMError."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any
from urllib.parse import quote

from nitronb import errors as _errors
from nitronb.errors import (AuthenticationError, CCMError, ConflictError, LocalStackError,
                            NotFoundError, PermissionDeniedError, ValidationError)

URL_ENV = "NITRONB_CCM_URL"
_BY_STATUS = {401: AuthenticationError, 403: PermissionDeniedError, 404: NotFoundError,
              409: ConflictError, 422: ValidationError}
_UP = "Start the local stack with `nitronb local up`."


def _p(value: str) -> str:
    return quote(str(value), safe="")


class CCMClient:
    """The manager at ``url``, acting as the holder of ``token`` (None for enclave calls)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        import requests

        self.url = url.rstrip("/")
        self.timeout = timeout
        self._session = requests.Session()
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"

    def __repr__(self) -> str:
        return f"CCMClient({self.url!r})"

    @classmethod
    def for_party(cls, party: str, workspace: str | Path | None = None,
                  url: str | None = None) -> "CCMClient":
        """A client acting as one of the local parties, with its token from the workspace."""
        from nitronb.workspace import workspace_dir

        ws = workspace_dir(workspace, create=False)
        url = url or manager_url(ws)
        tokens_path = ws / "ccm" / "tokens.json"
        try:
            tokens = json.loads(tokens_path.read_text("utf-8"))
        except FileNotFoundError:
            raise LocalStackError(f"no manager tokens in {tokens_path}.", hint=_UP) from None
        except (OSError, ValueError) as exc:
            raise LocalStackError(f"cannot read {tokens_path}: {exc}.") from None
        if party not in tokens:
            raise AuthenticationError(f"no token for party {party!r} in {tokens_path}; parties: "
                                      f"{', '.join(sorted(tokens))}.")
        return cls(url, tokens[party])

    # --- transport ----------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None,
              params: dict[str, Any] | None = None) -> Any:
        import requests

        params = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._session.request(method, self.url + path, json=body, params=params,
                                              timeout=self.timeout)
        except requests.ConnectionError:
            raise _errors.EndpointUnreachableError(
                f"the manager at {self.url} does not answer.", url=self.url, hint=_UP) from None
        try:
            payload = response.json()
        except ValueError:
            payload = {"message": response.text[:200]}
        if response.status_code >= 400:
            raise _error_for(response.status_code, payload, method, path)
        return payload

    # --- verbs (the same names as nitronb.ccm.service.Service) ---------------------------------

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/v1/sys/health")

    def whoami(self) -> dict[str, Any]:
        return self._call("GET", "/v1/sys/auth")

    def list_users(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/users")

    def create_user(self, name: str, roles: list[str] | None = None) -> dict[str, Any]:
        return self._call("POST", "/v1/users", {"name": name, "roles": roles or ["user"]})

    def create_dataset(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/datasets", payload)

    def update_dataset(self, dataset: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("PATCH", f"/v1/datasets/{_p(dataset)}", payload)

    def list_datasets(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/datasets")

    def get_dataset(self, dataset: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/datasets/{_p(dataset)}")

    def create_app(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/apps", payload)

    def list_apps(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/apps")

    def get_app(self, app: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/apps/{_p(app)}")

    def create_build(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/builds", payload)

    def list_builds(self, app: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/builds", params={"app_id": app})

    def get_build(self, build_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/builds/{_p(build_id)}")

    def list_tasks(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/tasks", params={"status": status})

    def get_task(self, task_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/tasks/{_p(task_id)}")

    def approve_task(self, task_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/tasks/{_p(task_id)}/approve", {})

    def deny_task(self, task_id: str, reason: str | None = None) -> dict[str, Any]:
        return self._call("POST", f"/v1/tasks/{_p(task_id)}/deny", {"reason": reason})

    def revoke_task(self, task_id: str, reason: str) -> dict[str, Any]:
        """Administrator: revoke an approved whitelisting task; its enclaves are refused."""
        return self._call("POST", f"/v1/tasks/{_p(task_id)}/revoke", {"reason": reason})

    def create_app_config(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/app_configs", payload)

    def list_app_configs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/app_configs")

    def get_app_config(self, config: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/app_configs/{_p(config)}")

    def create_workflow(self, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", "/v1/workflows/draft/graphs", payload)

    def update_workflow(self, workflow: str, payload: dict[str, Any]) -> dict[str, Any]:
        return self._call("PUT", f"/v1/workflows/draft/graphs/{_p(workflow)}", payload)

    def list_workflows(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/workflows/draft/graphs")

    def get_workflow(self, workflow: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/workflows/draft/graphs/{_p(workflow)}")

    def request_approval(self, workflow: str) -> dict[str, Any]:
        return self._call("POST", "/v1/approval_requests", {"workflow_id": workflow})

    def list_approval_requests(self, status: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/approval_requests", params={"status": status})

    def get_approval_request(self, request_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/approval_requests/{_p(request_id)}")

    def approve_request(self, request_id: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/approval_requests/{_p(request_id)}/approve", {})

    def deny_request(self, request_id: str, reason: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/approval_requests/{_p(request_id)}/deny",
                          {"reason": reason})

    def list_final_workflows(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/workflows/final/graphs")

    def get_final_workflow(self, final_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/workflows/final/graphs/{_p(final_id)}")

    def revoke_workflow(self, final_id: str, reason: str) -> dict[str, Any]:
        """An approver withdraws its approval of an approved version; its APPCONFIG_IDs are
        refused from then on. Returns the final workflow, now REVOKED."""
        return self._call("POST", f"/v1/workflows/final/graphs/{_p(final_id)}/revoke",
                          {"reason": reason})

    def list_runtime_configs(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/runtime/app_configs")

    def get_runtime_config(self, config_id: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/runtime/app_configs/{_p(config_id)}")

    def issue_nonce(self) -> dict[str, Any]:
        return self._call("POST", "/v1/runtime/nonces", {})

    def provision(self, config_id: str, attestation_document: bytes | str,
                  nonce: bytes | str | None = None) -> dict[str, Any]:
        """Send an attestation document; return ``{"app_config_id", "envelope"}``."""
        import base64

        def b64(value):
            return value if isinstance(value, str) or value is None else \
                base64.b64encode(value).decode("ascii")

        return self._call("POST", f"/v1/runtime/app_configs/{_p(config_id)}/provision",
                          {"attestation_document": b64(attestation_document),
                           "nonce": b64(nonce)})

    def audit_log(self, limit: int | None = None, object_id: str | None = None
                  ) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/audit", params={"limit": limit, "object_id": object_id})

    def verify_audit(self) -> dict[str, Any]:
        return self._call("GET", "/v1/audit/verify")

    def openapi(self) -> dict[str, Any]:
        return self._call("GET", "/openapi.json")


def _error_for(status: int, payload: Any, method: str, path: str) -> CCMError:
    payload = payload if isinstance(payload, dict) else {}
    message = payload.get("message") or f"{method} {path} failed with HTTP {status}."
    cls = getattr(_errors, str(payload.get("error")), None)
    if not (isinstance(cls, type) and issubclass(cls, CCMError)):
        cls = _BY_STATUS.get(status, CCMError)
    error = cls(message, hint=payload.get("hint"))
    error.status = status
    return error


def manager_url(workspace: str | Path | None = None) -> str:
    """The manager's URL: the local stack's state file, else ``$NITRONB_CCM_URL``."""
    from nitronb.workspace import workspace_dir

    ws = workspace_dir(workspace, create=False)
    state = ws / "local" / "state.json"
    try:
        url = json.loads(state.read_text("utf-8"))["services"]["manager"]["url"]
        if url:
            return str(url)
    except (OSError, ValueError, KeyError, TypeError):
        pass
    if os.environ.get(URL_ENV):
        return os.environ[URL_ENV]
    raise LocalStackError(f"no manager URL: {state} names none and ${URL_ENV} is not set.",
                          hint=_UP)

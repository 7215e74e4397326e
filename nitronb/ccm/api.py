"""The manager's HTTP layer: routes ``/v1/...`` to the service, JSON in and out, errors to status.

No rule lives here: each route parses the request, calls one service verb and serializes the
result. ``CCMError.status`` becomes the HTTP status; the body is ``{"error": kind, "message": …}``.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, unquote, urlsplit

from nitronb.ccm.service import Service
from nitronb.errors import CCMError, NitronbError, ValidationError

log = logging.getLogger("nitronb.ccm")
MAX_BODY = 8 << 20


@dataclass(frozen=True)
class Route:
    method: str
    template: str
    call: Callable[..., Any]
    summary: str
    auth: bool = True
    status: int = 200
    #: the call takes the client's remote address as a last argument
    client: bool = False

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", self.template) + "$")


def _q(query: dict[str, list[str]], name: str) -> str | None:
    return query.get(name, [None])[0]


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        raise ValidationError(f"{value!r} is not an integer.") from None


R = Route
ROUTES: list[Route] = [
    R("GET", "/v1/sys/health", lambda s, u, p, b, q: {"status": "ok"}, "health", auth=False),
    R("GET", "/v1/sys/auth", lambda s, u, p, b, q: s.whoami(u), "who the token belongs to"),
    R("POST", "/v1/sys/auth", lambda s, u, p, b, q: s.whoami(u), "who the token belongs to"),
    R("GET", "/v1/users", lambda s, u, p, b, q: s.list_users(u), "list users"),
    R("POST", "/v1/users", lambda s, u, p, b, q: s.create_user(u, b),
      "create a user (administrator); returns its token once", status=201),
    R("GET", "/v1/datasets", lambda s, u, p, b, q: s.list_datasets(u), "list datasets"),
    R("POST", "/v1/datasets", lambda s, u, p, b, q: s.create_dataset(u, b),
      "create a dataset", status=201),
    R("GET", "/v1/datasets/{id}", lambda s, u, p, b, q: s.get_dataset(u, p["id"]),
      "show a dataset (credentials redacted)"),
    R("PATCH", "/v1/datasets/{id}", lambda s, u, p, b, q: s.update_dataset(u, p["id"], b),
      "change a dataset's description, labels, long description or credentials"),
    R("GET", "/v1/apps", lambda s, u, p, b, q: s.list_apps(u), "list apps"),
    R("POST", "/v1/apps", lambda s, u, p, b, q: s.create_app(u, b),
      "create an app and its DOMAIN_WHITELIST task", status=201),
    R("GET", "/v1/apps/{id}", lambda s, u, p, b, q: s.get_app(u, p["id"]), "show an app"),
    R("GET", "/v1/builds", lambda s, u, p, b, q: s.list_builds(u, _q(q, "app_id")),
      "list builds (?app_id=)"),
    R("POST", "/v1/builds", lambda s, u, p, b, q: s.create_build(u, b),
      "register a build and its BUILD_WHITELIST task", status=201),
    R("GET", "/v1/builds/{id}", lambda s, u, p, b, q: s.get_build(u, p["id"]), "show a build"),
    R("GET", "/v1/tasks", lambda s, u, p, b, q: s.list_tasks(u, _q(q, "status")),
      "list tasks (?status=)"),
    R("GET", "/v1/tasks/{id}", lambda s, u, p, b, q: s.get_task(u, p["id"]), "show a task"),
    R("POST", "/v1/tasks/{id}/approve", lambda s, u, p, b, q: s.approve_task(u, p["id"]),
      "approve a task (administrator)"),
    R("POST", "/v1/tasks/{id}/deny",
      lambda s, u, p, b, q: s.deny_task(u, p["id"], (b or {}).get("reason")),
      "deny a task (administrator)"),
    R("POST", "/v1/tasks/{id}/revoke",
      lambda s, u, p, b, q: s.revoke_task(u, p["id"], (b or {}).get("reason")),
      "revoke an approved task, with a reason (administrator)"),
    R("GET", "/v1/app_configs", lambda s, u, p, b, q: s.list_app_configs(u),
      "list application configurations"),
    R("POST", "/v1/app_configs", lambda s, u, p, b, q: s.create_app_config(u, b),
      "create an application configuration", status=201),
    R("GET", "/v1/app_configs/{id}", lambda s, u, p, b, q: s.get_app_config(u, p["id"]),
      "show an application configuration"),
    R("GET", "/v1/workflows/draft/graphs", lambda s, u, p, b, q: s.list_workflows(u),
      "list workflow drafts"),
    R("POST", "/v1/workflows/draft/graphs", lambda s, u, p, b, q: s.create_workflow(u, b),
      "create a workflow draft", status=201),
    R("GET", "/v1/workflows/draft/graphs/{id}",
      lambda s, u, p, b, q: s.get_workflow(u, p["id"]), "show a workflow draft"),
    R("PUT", "/v1/workflows/draft/graphs/{id}",
      lambda s, u, p, b, q: s.update_workflow(u, p["id"], b), "change a workflow draft"),
    R("GET", "/v1/workflows/final/graphs", lambda s, u, p, b, q: s.list_final_workflows(u),
      "list final workflow versions"),
    R("GET", "/v1/workflows/final/graphs/{id}",
      lambda s, u, p, b, q: s.get_final_workflow(u, p["id"]),
      "show a final workflow version with its approval state"),
    R("POST", "/v1/workflows/final/graphs/{id}/revoke",
      lambda s, u, p, b, q: s.revoke_workflow(u, p["id"], (b or {}).get("reason")),
      "withdraw the approval of an approved version, with a reason (an approver)"),
    R("GET", "/v1/approval_requests",
      lambda s, u, p, b, q: s.list_approval_requests(u, _q(q, "status")),
      "list approval requests (?status=)"),
    R("POST", "/v1/approval_requests",
      lambda s, u, p, b, q: s.request_approval(u, (b or {}).get("workflow_id")),
      "request approval of a draft's current version ({workflow_id})", status=201),
    R("GET", "/v1/approval_requests/{id}",
      lambda s, u, p, b, q: s.get_approval_request(u, p["id"]), "show an approval request"),
    R("POST", "/v1/approval_requests/{id}/approve",
      lambda s, u, p, b, q: s.approve_request(u, p["id"]), "approve (an object owner)"),
    R("POST", "/v1/approval_requests/{id}/deny",
      lambda s, u, p, b, q: s.deny_request(u, p["id"], (b or {}).get("reason")),
      "decline with a reason (an object owner)"),
    R("GET", "/v1/runtime/app_configs", lambda s, u, p, b, q: s.list_runtime_configs(u),
      "list runtime configurations visible to the user"),
    R("GET", "/v1/runtime/app_configs/{id}",
      lambda s, u, p, b, q: s.get_runtime_config(u, p["id"]),
      "a runtime configuration {config, extra} (no credentials)"),
    R("POST", "/v1/runtime/nonces", lambda s, u, p, b, q, client: s.issue_nonce(client),
      "a single-use nonce for an attestation document (429 beyond the per-client limits)",
      auth=False, status=201, client=True),
    R("POST", "/v1/runtime/app_configs/{id}/provision",
      lambda s, u, p, b, q: s.provision(p["id"], (b or {}).get("attestation_document"),
                                        (b or {}).get("nonce")),
      "release the configuration and credentials to an attested enclave", auth=False),
    R("GET", "/v1/audit", lambda s, u, p, b, q: s.audit_log(u, _int(_q(q, "limit")),
                                                            _q(q, "object_id")),
      "the audit log (?limit=&object_id=)"),
    R("GET", "/v1/audit/verify", lambda s, u, p, b, q: s.verify_audit(u),
      "verify the audit log's hash chain"),
]
_COMPILED = [(route, route.pattern) for route in ROUTES]


def dispatch(service: Service, method: str, target: str, headers: dict[str, str],
             raw_body: bytes, client: str | None = None) -> tuple[int, Any]:
    """Handle one request from ``client`` (its remote address); return ``(status, JSON-ready
    body)``."""
    parts = urlsplit(target)
    path = parts.path.rstrip("/") or "/"
    if path == "/openapi.json" and method == "GET":
        from nitronb.ccm.openapi import openapi

        return 200, openapi(ROUTES)
    matches = [(r, m) for r, pat in _COMPILED if (m := pat.match(path))]
    if not matches:
        return 404, {"error": "NotFoundError", "message": f"no endpoint {path}; see /openapi.json."}
    chosen = [(r, m) for r, m in matches if r.method == method]
    if not chosen:
        allowed = ", ".join(sorted({r.method for r, _ in matches}))
        return 405, {"error": "MethodNotAllowed",
                     "message": f"{method} is not allowed on {path}; use {allowed}."}
    route, match = chosen[0]
    try:
        user = None
        if route.auth:
            auth = headers.get("authorization", "")
            token = auth[7:].strip() if auth[:7].lower() == "bearer " else None
            user = service.authenticate(token)
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError as exc:
                raise ValidationError(f"the request body is not JSON: {exc}.") from None
        if method in ("POST", "PUT", "PATCH") and body is not None and not isinstance(body, dict):
            raise ValidationError("the request body must be a JSON object.")
        params = {k: unquote(v) for k, v in match.groupdict().items()}
        args = (service, user, params, body, parse_qs(parts.query))
        result = route.call(*args, client) if route.client else route.call(*args)
        return route.status, result
    except CCMError as exc:
        return exc.status, _error(exc)
    except NitronbError as exc:
        return 422, _error(exc)
    except Exception:  # noqa: BLE001 - one request must never take the server down
        log.exception("internal error on %s %s", method, path)
        return 500, {"error": "InternalError", "message": "internal error; see the manager's log."}


def _error(exc: NitronbError) -> dict[str, Any]:
    out = {"error": type(exc).__name__, "message": exc.message}
    if exc.hint:
        out["hint"] = exc.hint
    return out


class _Handler(BaseHTTPRequestHandler):
    server_version = "nitronb-ccm"
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body leave in one write, flushed after each request
    service: Service

    def _handle(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0 or length > MAX_BODY:
            self._send(413, {"error": "PayloadTooLarge",
                             "message": f"the body must declare a Content-Length of at most "
                                        f"{MAX_BODY} bytes."})
            self.close_connection = True
            return
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload = dispatch(self.service, self.command, self.path, headers, raw,
                                   self.client_address[0])
        self._send(status, payload)

    def _send(self, status: int, payload: Any) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Bearer realm="nitronb-ccm"')
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.info("%s %s", self.address_string(), format % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default 5 resets connections when many clients arrive at once


def make_server(service: Service, host: str = "127.0.0.1", port: int = 0) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving) for ``service`` on ``host:port``."""
    handler = type("Handler", (_Handler,), {"service": service})
    return _Server((host, port), handler)

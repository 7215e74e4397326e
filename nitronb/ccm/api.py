"""The manager's HTTP layer: a FastAPI application routing ``/v1/...`` to the service's verbs.

No rule lives here: each route takes its validated body (:mod:`nitronb.ccm.api_models`), calls
one :class:`~nitronb.ccm.service.Service` verb and serializes the result. ``CCMError.status``
becomes the HTTP status; every error body is ``{"error": kind, "message": …[, "hint": …]}``,
also for bodies that are not JSON or do not fit their model (422), unknown paths (404) and
methods (405), and a full disk (507). The OpenAPI document is generated at ``/openapi.json``.
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.exceptions import HTTPException
from starlette.routing import Match

from nitronb.ccm import api_models as m
from nitronb.ccm.models import User
from nitronb.ccm.service import MAX_AUDIT_LIMIT, Service
from nitronb.errors import CCMError, InsufficientStorageError, NitronbError
from nitronb.http_server import guarded_route, printable, unparsable_body_message

log = logging.getLogger("nitronb.ccm")
MAX_BODY = 8 << 20
MAX_JSON_DEPTH = 32


class JSON(Response):
    media_type = "application/json; charset=utf-8"

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False).encode("utf-8")


def _error(exc: NitronbError, status: int | None = None) -> JSON:
    body = {"error": type(exc).__name__, "message": exc.message}
    if exc.hint:
        body["hint"] = exc.hint
    status = status or (exc.status if isinstance(exc, CCMError) else 422)
    headers = {"WWW-Authenticate": 'Bearer realm="nitronb-ccm"'} if status == 401 else None
    return JSON(body, status_code=status, headers=headers)


def _disk_full(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says the disk is full."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if isinstance(exc, sqlite3.Error) and (
                getattr(exc, "sqlite_errorcode", None) == 13 or "disk is full" in str(exc)):
            return True
        if getattr(exc, "sqlstate", None) == "53100":  # PostgreSQL: disk_full
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def _database_down(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) says the database server cannot be reached: a
    connection lost or refused, the server shutting down (PostgreSQL's classes 08 and 57P)."""
    while exc is not None:
        if getattr(exc, "connection_invalidated", False):
            return True
        state = getattr(exc, "sqlstate", None)
        if isinstance(state, str) and (state.startswith("08") or state.startswith("57P")):
            return True
        if type(exc).__module__.startswith("psycopg") and \
                type(exc).__name__ == "OperationalError":
            return True
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "orig", None)
    return False


def _unavailable(request: Request, exc: BaseException) -> JSON:
    log.error("%s %s: the database cannot be reached (%s)", printable(request.method),
              printable(request.url.path), " ".join(str(exc).split())[:300])
    return JSON({"error": "DatabaseUnavailable",
                 "message": "the manager's database cannot be reached; nothing was changed.",
                 "hint": "Retry in a moment; if it persists, check that the database server "
                         "is running (see the manager's log)."},
                status_code=503, headers={"Retry-After": "5"})


def _route_error(request: Request, exc: Exception) -> JSON:
    """The error body for what a route raised: the service's errors by their status, a full
    disk as 507, a database that cannot be reached as 503, anything else as a logged 500."""
    if _database_down(exc):
        return _unavailable(request, exc)
    if _disk_full(exc):
        if not isinstance(exc, NitronbError):
            log.error("%s %s: the disk is full (%s)", printable(request.method),
                      printable(request.url.path), exc)
        return _full(request)
    if isinstance(exc, NitronbError):
        return _error(exc)
    log.error("internal error on %s %s", printable(request.method),
              printable(request.url.path), exc_info=exc)
    return JSON({"error": "InternalError", "message": "internal error; see the manager's log."},
                status_code=500)


_Route = guarded_route(_route_error)


def _full(request: Request) -> JSON:
    folder = request.app.state.folder
    return _error(InsufficientStorageError(
        f"the manager's disk is full: the change was not made; free space in {folder} and "
        "retry."))


# --- dependencies -----------------------------------------------------------------------------

_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="a party's token (<workspace>/ccm/tokens.json)")


async def _service(request: Request) -> Service:  # async: no thread needed to look it up
    return request.app.state.service


async def _token(credentials: Annotated[HTTPAuthorizationCredentials | None,
                                        Depends(_bearer)]) -> str | None:
    return credentials.credentials if credentials else None


class Caller:
    """The bearer token of a request, authenticated in the route's own thread (the store is
    not queried on the event loop, and one thread serves the whole request)."""

    def __init__(self, token: str | None) -> None:
        self.token = token

    def __call__(self, service: Service) -> User:
        return service.authenticate(self.token)


async def _caller(token: Annotated[str | None, Depends(_token)]) -> Caller:
    return Caller(token)


S = Annotated[Service, Depends(_service)]
U = Annotated[Caller, Depends(_caller)]
MAX_ID = 256  # characters of an id or name in a path (longer ones: 422, never echoed)
Id = Annotated[str, PathParam(max_length=MAX_ID, description="the object's id or name")]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": m.ErrorOut, "description": what} for status, what in (
        (400, "the body is not JSON, or nests too deep"),
        (401, "no token, or an unknown one"),
        (403, "the caller may not do this (or an enclave's release is refused)"),
        (404, "no such object visible to the caller, or no such endpoint"),
        (405, "the method is not allowed on this path"),
        (409, "the object's state does not allow it"),
        (413, "the body is larger than 8 MiB"),
        (422, "the body or a parameter is invalid"),
        (429, "too many nonces for this client"),
        (500, "an internal error (see the manager's log)"),
        (507, "the manager's disk is full; nothing was changed"))}
router = APIRouter(route_class=_Route, default_response_class=JSON, strict_content_type=False,
                   responses=_ERRORS)
_REASON_REQUIRED = {"openapi_extra": {"requestBody": {"required": True}}}
get, post = router.get, router.post
_201 = {"status_code": 201}


def ok(result: Any, status: int = 200) -> JSON:
    return JSON(result, status_code=status)


# --- routes -----------------------------------------------------------------------------------


@get("/v1/sys/health", summary="health")
def health(request: Request) -> JSON:
    """200 ``{"status": "ok"}`` once the database answers, else 503 ``DatabaseUnavailable``."""
    request.app.state.service.store.execute("SELECT 1")
    return ok({"status": "ok"})


@router.head("/v1/sys/health", include_in_schema=False)
def health_head(request: Request) -> JSON:
    request.app.state.service.store.execute("SELECT 1")
    return ok({"status": "ok"})


@get("/v1/sys/auth", summary="who the token belongs to")
def whoami(s: S, u: U) -> JSON:
    return ok(s.whoami(u(s)))


@post("/v1/sys/auth", summary="who the token belongs to")
def whoami_post(s: S, u: U) -> JSON:
    return ok(s.whoami(u(s)))


@get("/v1/users", summary="list users")
def list_users(s: S, u: U) -> JSON:
    return ok(s.list_users(u(s)))


@post("/v1/users", summary="create a user (administrator); returns its token once", **_201)
def create_user(s: S, u: U, body: m.UserIn) -> JSON:
    return ok(s.create_user(u(s), body.payload()), 201)


@get("/v1/datasets", summary="list datasets")
def list_datasets(s: S, u: U) -> JSON:
    return ok(s.list_datasets(u(s)))


@post("/v1/datasets", summary="create a dataset", **_201)
def create_dataset(s: S, u: U, body: m.DatasetIn) -> JSON:
    return ok(s.create_dataset(u(s), body.payload()), 201)


@get("/v1/datasets/{id}", summary="show a dataset (credentials redacted)")
def get_dataset(s: S, u: U, id: Id) -> JSON:  # noqa: A002 - the path's name
    return ok(s.get_dataset(u(s), id))


@router.patch("/v1/datasets/{id}", summary="change a dataset's description, labels, long "
                                           "description or credentials")
def update_dataset(s: S, u: U, id: Id, body: m.DatasetChange) -> JSON:  # noqa: A002
    return ok(s.update_dataset(u(s), id, body.payload()))


@get("/v1/apps", summary="list apps")
def list_apps(s: S, u: U) -> JSON:
    return ok(s.list_apps(u(s)))


@post("/v1/apps", summary="create an app and its DOMAIN_WHITELIST task", **_201)
def new_app(s: S, u: U, body: m.AppIn) -> JSON:
    return ok(s.create_app(u(s), body.payload()), 201)


@get("/v1/apps/{id}", summary="show an app")
def get_app(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_app(u(s), id))


@get("/v1/builds", summary="list builds (?app_id=)")
def list_builds(s: S, u: U, app_id: str | None = None) -> JSON:
    return ok(s.list_builds(u(s), app_id))


@post("/v1/builds", summary="register a build and its BUILD_WHITELIST task", **_201)
def create_build(s: S, u: U, body: m.BuildIn) -> JSON:
    return ok(s.create_build(u(s), body.payload()), 201)


@get("/v1/builds/{id}", summary="show a build")
def get_build(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_build(u(s), id))


@get("/v1/tasks", summary="list tasks (?status=)")
def list_tasks(s: S, u: U, status: str | None = None) -> JSON:
    return ok(s.list_tasks(u(s), status))


@get("/v1/tasks/{id}", summary="show a task")
def get_task(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_task(u(s), id))


@post("/v1/tasks/{id}/approve", summary="approve a task (administrator)")
def approve_task(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.approve_task(u(s), id))


@post("/v1/tasks/{id}/deny", summary="deny a task (administrator)")
def deny_task(s: S, u: U, id: Id, body: m.OptionalReason | None = None) -> JSON:  # noqa: A002
    return ok(s.deny_task(u(s), id, body.reason if body else None))


@post("/v1/tasks/{id}/revoke", summary="revoke an approved task, with a reason (administrator)",
      **_REASON_REQUIRED)
def revoke_task(s: S, u: U, id: Id, body: m.Reason | None = None) -> JSON:  # noqa: A002
    return ok(s.revoke_task(u(s), id, body.reason if body else None))


@get("/v1/app_configs", summary="list application configurations")
def list_app_configs(s: S, u: U) -> JSON:
    return ok(s.list_app_configs(u(s)))


@post("/v1/app_configs", summary="create an application configuration", **_201)
def create_app_config(s: S, u: U, body: m.AppConfigIn) -> JSON:
    return ok(s.create_app_config(u(s), body.payload()), 201)


@get("/v1/app_configs/{id}", summary="show an application configuration")
def get_app_config(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_app_config(u(s), id))


@get("/v1/workflows/draft/graphs", summary="list workflow drafts")
def list_workflows(s: S, u: U) -> JSON:
    return ok(s.list_workflows(u(s)))


@post("/v1/workflows/draft/graphs", summary="create a workflow draft", **_201)
def create_workflow(s: S, u: U, body: m.WorkflowIn) -> JSON:
    return ok(s.create_workflow(u(s), body.payload()), 201)


@get("/v1/workflows/draft/graphs/{id}", summary="show a workflow draft")
def get_workflow(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_workflow(u(s), id))


@router.put("/v1/workflows/draft/graphs/{id}", summary="change a workflow draft")
def update_workflow(s: S, u: U, id: Id, body: m.WorkflowIn) -> JSON:  # noqa: A002
    return ok(s.update_workflow(u(s), id, body.payload()))


@get("/v1/workflows/final/graphs", summary="list final workflow versions")
def list_final_workflows(s: S, u: U) -> JSON:
    return ok(s.list_final_workflows(u(s)))


@get("/v1/workflows/final/graphs/{id}",
     summary="show a final workflow version with its approval state")
def get_final_workflow(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_final_workflow(u(s), id))


@post("/v1/workflows/final/graphs/{id}/revoke",
      summary="withdraw the approval of an approved version, with a reason (an approver)",
      **_REASON_REQUIRED)
def revoke_workflow(s: S, u: U, id: Id, body: m.Reason | None = None
                    ) -> JSON:  # noqa: A002
    return ok(s.revoke_workflow(u(s), id, body.reason if body else None))


@get("/v1/approval_requests", summary="list approval requests (?status=)")
def list_approval_requests(s: S, u: U, status: str | None = None) -> JSON:
    return ok(s.list_approval_requests(u(s), status))


@post("/v1/approval_requests", summary="request approval of a draft's current version", **_201)
def request_approval(s: S, u: U, body: m.ApprovalRequestIn | None = None) -> JSON:
    return ok(s.request_approval(u(s), body.workflow_id if body else None), 201)


@get("/v1/approval_requests/{id}", summary="show an approval request")
def get_approval_request(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_approval_request(u(s), id))


@post("/v1/approval_requests/{id}/approve", summary="approve (an object owner)")
def approve_request(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.approve_request(u(s), id))


@post("/v1/approval_requests/{id}/deny", summary="decline with a reason (an object owner)",
      **_REASON_REQUIRED)
def deny_request(s: S, u: U, id: Id, body: m.Reason | None = None) -> JSON:  # noqa: A002
    return ok(s.deny_request(u(s), id, body.reason if body else None))


@get("/v1/runtime/app_configs", summary="list runtime configurations visible to the user")
def list_runtime_configs(s: S, u: U) -> JSON:
    return ok(s.list_runtime_configs(u(s)))


@get("/v1/runtime/app_configs/{id}",
     summary="a runtime configuration {config, extra} (no credentials)")
def get_runtime_config(s: S, u: U, id: Id) -> JSON:  # noqa: A002
    return ok(s.get_runtime_config(u(s), id))


@post("/v1/runtime/nonces", summary="a single-use nonce for an attestation document "
      "(429 beyond the per-client limits)", **_201)
def issue_nonce(s: S, request: Request) -> JSON:
    return ok(s.issue_nonce(request.client.host if request.client else None), 201)


@post("/v1/runtime/app_configs/{id}/provision",
      summary="release the configuration and credentials to an attested enclave")
def provision(s: S, id: Id, body: m.ProvisionIn | None = None) -> JSON:  # noqa: A002
    body = body or m.ProvisionIn()
    return ok(s.provision(id, body.attestation_document, body.nonce))


@get("/v1/audit", summary="the audit log (?limit=&object_id=)")
def audit_log(s: S, u: U, limit: Annotated[int | None, Query(ge=1, le=MAX_AUDIT_LIMIT)] = None,
              object_id: str | None = None) -> JSON:
    return ok(s.audit_log(u(s), limit, object_id))


@get("/v1/audit/verify", summary="verify the audit log's hash chain")
def verify_audit(s: S, u: U) -> JSON:
    return ok(s.verify_audit(u(s)))


# --- the application --------------------------------------------------------------------------


def _validation_message(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        if error.get("type") == "json_invalid":
            return f"the request body is not JSON: {error.get('ctx', {}).get('error', '')}."
        problems.append(f"'{where}': {error.get('msg')}" if where else
                        f"the request body: {error.get('msg')}")
    return "; ".join(problems) + "."


def _allowed(scope: dict[str, Any]) -> list[str]:
    methods: set[str] = set()
    for route in router.routes:
        if isinstance(route, APIRoute) and route.matches(scope)[0] != Match.NONE:
            methods |= route.methods or set()
    return sorted(methods - {"HEAD"})


def create_app(service: Service, folder: str | Path | None = None) -> FastAPI:
    """The manager's ASGI application for ``service``; ``folder`` (its state, named in the
    full-disk message) defaults to the database's folder."""
    from nitronb import __version__

    app = FastAPI(title="nitronb manager (CCM-shaped API)", version=__version__,
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json",
                  default_response_class=JSON)
    app.state.service = service
    store = service.store
    app.state.folder = str(folder or (store.path.parent if store.path else
                                      f"the database server's disk ({store.location})"))
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSON:
        return JSON({"error": "ValidationError", "message": _validation_message(exc)},
                    status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSON:
        path = request.url.path
        if exc.status_code == 404:
            return JSON({"error": "NotFoundError",
                         "message": f"no endpoint {printable(path, 200)}; see /openapi.json."},
                        status_code=404)
        if exc.status_code == 405:
            allowed = _allowed(request.scope)
            return JSON({"error": "MethodNotAllowed",
                         "message": f"{request.method} is not allowed on "
                                    f"{printable(path, 200)}; use "
                                    f"{', '.join(allowed)}."},
                        status_code=405, headers={"Allow": ", ".join(allowed)})
        if exc.status_code == 400:
            return JSON({"error": "ValidationError", "message": unparsable_body_message(exc)},
                        status_code=400)
        return JSON({"error": "HTTPError", "message": str(exc.detail)},
                    status_code=exc.status_code, headers=exc.headers)

    return app


def make_server(service: Service, host: str = "127.0.0.1", port: int = 0, *,
                limits: Any = None):
    """A server (:class:`nitronb.http_server.Server`, not yet serving) of ``service`` on
    ``host:port``, with the manager's body limits (8 MiB, JSON nesting 32 deep)."""
    from dataclasses import replace

    from nitronb.http_server import Limits, Server

    limits = replace(limits or Limits(), max_body=MAX_BODY, max_json_depth=MAX_JSON_DEPTH)
    return Server(create_app(service), host, port, limits=limits, logger=log)

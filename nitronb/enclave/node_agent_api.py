"""The node agent's HTTP layer: a FastAPI application over :class:`nitronb.enclave.node_agent.NodeAgent`,
served by uvicorn with the limits of :mod:`nitronb.http_server` (bodies up to 1 MiB).

``GET /health``; with the operator's bearer token: ``POST /v1/enclaves``,
``GET /v1/enclaves[/{id}[/log]]``, ``POST /v1/enclaves/{id}/stop``; with the enclave's own
token: ``POST /v1/enclaves/{id}/attestation``. Errors are ``{"error": kind, "message": …}``
with the status of the :class:`~nitronb.errors.CCMError` raised (422 for other refusals).
The OpenAPI document is at ``/openapi.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from nitronb.errors import CCMError, NitronbError
from nitronb.http_server import (Limits, Server, add_arguments, guarded_route, limits_from,
                                 printable, unparsable_body_message)
from nitronb.enclave.node_agent import NodeAgent

log = logging.getLogger("nitronb.enclave.node_agent")
MAX_BODY = 1 << 20
MAX_JSON_DEPTH = 32


class LaunchIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    image: str | None = Field(None, description="an enclave image reference or folder")
    appconfig_id: str | None = Field(None, description="the 64 hex APPCONFIG_ID")
    ccm_url: str | None = Field(None, description="the manager's http(s) URL")
    backend: str | None = Field(None, description="auto, process or container")


class AttestIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    public_key: str | None = Field(None, description="base64")
    user_data: str | None = Field(None, description="base64")
    nonce: str | None = Field(None, description="base64")


def _error(status: int, kind: str, message: str) -> JSONResponse:
    return JSONResponse({"error": kind, "message": message}, status_code=status)


def _route_error(request: Request, exc: Exception) -> JSONResponse:
    """The error body for what a route raised: nitronb's errors by their status (422 for
    those without one), anything else as a logged 500."""
    if isinstance(exc, CCMError):
        return _error(exc.status, type(exc).__name__, str(exc))
    if isinstance(exc, NitronbError):
        return _error(422, type(exc).__name__, str(exc))
    log.error("internal error on %s %s", printable(request.method),
              printable(request.url.path), exc_info=exc)
    return _error(500, "InternalError", "internal error; see the node agent's log.")


_Route = guarded_route(_route_error)


_bearer = HTTPBearer(auto_error=False, scheme_name="bearer",
                     description="the operator's token, or an enclave's own for attestation")


def _agent(request: Request) -> NodeAgent:
    return request.app.state.agent


def _token(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
           ) -> str | None:
    return credentials.credentials if credentials else None


def _operator(request: Request, token: Annotated[str | None, Depends(_token)]) -> NodeAgent:
    agent = _agent(request)
    agent.check_operator(token)
    return agent


Op = Annotated[NodeAgent, Depends(_operator)]
EnclaveId = str
router = APIRouter(route_class=_Route)


@router.get("/health", summary="health")
def health() -> Any:
    return {"status": "ok"}


@router.head("/health", include_in_schema=False)
def health_head() -> Any:
    return {"status": "ok"}


@router.get("/v1/enclaves", summary="the enclaves launched by this agent (operator)")
def list_enclaves(agent: Op) -> Any:
    return [e.public() for e in list(agent.enclaves.values())]


@router.post("/v1/enclaves", summary="measure an image and launch it as an enclave (operator)")
def launch(agent: Op, body: LaunchIn) -> Any:
    return agent.launch(body.image, body.appconfig_id, body.ccm_url, body.backend or "auto")


@router.get("/v1/enclaves/{id}", summary="one enclave's record (operator)")
def get_enclave(agent: Op, id: EnclaveId) -> Any:  # noqa: A002 - the path's name
    return agent.get(id).public()


@router.get("/v1/enclaves/{id}/log", summary="the tail of an enclave's log (operator)")
def read_log(agent: Op, id: EnclaveId) -> Any:  # noqa: A002
    return {"log": agent.read_log(id)}


@router.post("/v1/enclaves/{id}/attestation",
             summary="an attestation document for the enclave itself (its own token)")
def attest(request: Request, token: Annotated[str | None, Depends(_token)], id: EnclaveId,
           body: AttestIn | None = None) -> Any:  # noqa: A002
    fields = body.model_dump(exclude_unset=True) if body else {}
    return _agent(request).attest(id, token, fields)


@router.post("/v1/enclaves/{id}/stop", summary="stop an enclave (operator)")
def stop(agent: Op, id: EnclaveId) -> Any:  # noqa: A002
    return agent.stop(id)


def create_app(agent: NodeAgent) -> FastAPI:
    """The node agent's ASGI application for ``agent``."""
    from nitronb import __version__

    app = FastAPI(title="nitronb node agent", version=__version__, docs_url=None,
                  redoc_url=None, openapi_url="/openapi.json")
    app.state.agent = agent
    app.include_router(router)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems = []
        for error in exc.errors():
            if error.get("type") == "json_invalid":
                return _error(422, "ValidationError", "not JSON: the request body must be "
                                                      "a JSON object.")
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
            problems.append(f"'{where}': {error.get('msg')}" if where else
                            f"the request body (JSON, Content-Type: application/json): "
                            f"{error.get('msg')}")
        return _error(422, "ValidationError", "; ".join(problems) + ".")

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        path = request.url.path
        if exc.status_code == 404:
            return _error(404, "NotFoundError", f"no endpoint {printable(path, 200)}.")
        if exc.status_code == 405:
            return _error(405, "MethodNotAllowed",
                          f"{request.method} is not allowed on {printable(path, 200)}.")
        if exc.status_code == 400:
            return _error(400, "ValidationError", unparsable_body_message(exc))
        return _error(exc.status_code, "HTTPError", str(exc.detail))

    return app


def make_server(agent: NodeAgent, host: str = "127.0.0.1", port: int = 0, *,
                limits: Limits | None = None) -> Server:
    """A server (not yet serving) of ``agent`` on ``host:port`` (``port`` 0: a free one);
    sets ``agent.url``."""
    from dataclasses import replace

    limits = replace(limits or Limits(), max_body=MAX_BODY, max_json_depth=MAX_JSON_DEPTH)
    server = Server(create_app(agent), host, port, limits=limits, logger=log)
    agent.url = f"http://{host}:{server.server_address[1]}"
    return server


def main(argv: list[str] | None = None) -> int:
    """``python -m nitronb.enclave.node_agent_api --workspace WS [--host H] [--port P]``: serve until
    SIGTERM; enclaves still running are stopped on the way out."""
    parser = argparse.ArgumentParser(prog="python -m nitronb.enclave.node_agent_api")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    agent = NodeAgent(Path(args.workspace))
    server = make_server(agent, args.host, args.port, limits=limits_from(args))
    log.info("node agent on %s (NSM root %s)", agent.url, agent.nsm.root_path)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        for enclave in list(agent.enclaves.values()):
            if enclave.handle is not None and enclave.exit_code is None:
                enclave.handle.stop()
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())

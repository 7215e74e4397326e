"""Serving nitronb's HTTP services (the manager, the node agent, the local S3 endpoint) on uvicorn.

Every service gets the same protections:

- ``idle_timeout`` (s): a connection must deliver a complete request head within this time of
  opening or of its previous response, else it is closed (idle keep-alive connections, and
  clients that send their headers a byte at a time);
- ``read_timeout`` (s): while a request body arrives, a pause longer than this closes the
  connection (a client that stops sending mid-body);
- a request head larger than 64 KiB closes the connection; ``max_body`` (bytes, when
  set) refuses larger bodies with 413 before reading them; ``max_json_depth`` (when set)
  refuses a body nesting more than that many arrays and objects with 400;
- a listen backlog of ``backlog`` connections, at most ``max_connections`` open at once
  (503 beyond);
- SIGTERM or SIGINT: stop accepting, let requests in flight finish (at most
  ``shutdown_timeout`` s), then return from :meth:`Server.serve_forever` (exit code 0).

Each service's command line takes ``--idle-timeout``, ``--read-timeout`` and
``--shutdown-timeout`` (defaults from ``$NITRONB_HTTP_IDLE_TIMEOUT``,
``$NITRONB_HTTP_READ_TIMEOUT``, ``$NITRONB_HTTP_SHUTDOWN_TIMEOUT``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import socket
import threading
from dataclasses import dataclass, fields, replace
from typing import Any, Awaitable, Callable, Iterator

MAX_HEAD = 64 * 1024
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class Limits:
    """Timeouts (seconds) and sizes one service is served with; see the module's docstring."""

    idle_timeout: float = 5.0
    read_timeout: float = 30.0
    shutdown_timeout: float = 30.0
    backlog: int = 1024
    max_connections: int = 1000
    max_body: int | None = None
    max_json_depth: int | None = None


_ENV = {"idle_timeout": "NITRONB_HTTP_IDLE_TIMEOUT", "read_timeout": "NITRONB_HTTP_READ_TIMEOUT",
        "shutdown_timeout": "NITRONB_HTTP_SHUTDOWN_TIMEOUT"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--idle-timeout``, ``--read-timeout`` and ``--shutdown-timeout`` to ``parser``."""
    defaults = Limits()
    for name, env in _ENV.items():
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=float, default=float(os.environ.get(env) or
                                                            getattr(defaults, name)),
                            metavar="SECONDS", help=f"(default ${env} or "
                                                    f"{getattr(defaults, name):g})")


def limits_from(args: argparse.Namespace, **sizes: Any) -> Limits:
    """The limits named on the command line (see :func:`add_arguments`) and ``sizes``."""
    names = {f.name for f in fields(Limits)}
    given = {k: getattr(args, k) for k in _ENV if hasattr(args, k)}
    return replace(Limits(), **given, **{k: v for k, v in sizes.items() if k in names})


# --- the connection: head and body timeouts ---------------------------------------------------


class _Guard:
    """Mixed into uvicorn's connection class: a deadline for the request head (and a size
    limit for it) and a read timeout for the body; uvicorn itself only times out keep-alive
    after a response."""

    limits: Limits
    _head_timer: Any = None
    _body_timer: Any = None
    _head_bytes = 0
    _head_tail = b""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._state() == "head":  # the head's bytes over every read, up to its blank line
            seen = self._head_tail + data
            end = seen.find(b"\r\n\r\n")
            size = self._head_bytes + (len(data) if end < 0 else
                                       end + 4 - len(self._head_tail))
            if size > MAX_HEAD:
                self.transport.close()  # type: ignore[attr-defined]  # never parsed
                return
            self._head_bytes, self._head_tail = size, seen[-3:]
        super().data_received(data)  # type: ignore[misc]
        self._watch(data_arrived=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        self._watch()

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to bytes that are not HTTP, as an ``{"error", "message"}`` body."""
        body = json.dumps({"error": "BadRequest",
                           "message": f"the request is not valid HTTP/1.1 ({msg})"}).encode()
        self.transport.write(  # type: ignore[attr-defined]
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json; charset=utf-8\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n"
            + body)
        self.transport.close()  # type: ignore[attr-defined]

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel("_head_timer")
        self._cancel("_body_timer")
        super().connection_lost(exc)  # type: ignore[misc]

    def _state(self) -> str:
        cycle = self.cycle  # type: ignore[attr-defined]
        if cycle is None or cycle.response_complete:
            return "head"
        return "body" if cycle.more_body else "busy"

    def _cancel(self, name: str) -> None:
        timer = getattr(self, name)
        if timer is not None:
            timer.cancel()
            setattr(self, name, None)

    def _watch(self, data_arrived: bool = False) -> None:
        if self.transport.is_closing():  # type: ignore[attr-defined]
            return
        state = self._state()
        loop = self.loop  # type: ignore[attr-defined]
        if state == "head":  # one deadline for the whole head, not reset by data
            self._cancel("_body_timer")
            if self._head_timer is None:
                self._head_bytes, self._head_tail = 0, b""
                self._head_timer = loop.call_later(self.limits.idle_timeout, self._expired)
        elif state == "body":  # a pause of read_timeout while the body arrives closes
            self._cancel("_head_timer")
            if data_arrived or self._body_timer is None:
                self._cancel("_body_timer")
                self._body_timer = loop.call_later(self.limits.read_timeout, self._body_expired)
        else:
            self._cancel("_head_timer")
            self._cancel("_body_timer")

    def _expired(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and self._state() == "head":  # type: ignore
            self.transport.close()  # type: ignore[attr-defined]

    def _body_expired(self) -> None:
        self._body_timer = None
        if self.transport.is_closing() or self._state() != "body":  # type: ignore
            return
        cycle = self.cycle  # type: ignore[attr-defined]
        if self.flow.read_paused or cycle.waiting_for_100_continue:  # type: ignore
            # the application is not reading (yet): not the client's fault
            self._body_timer = self.loop.call_later(  # type: ignore[attr-defined]
                self.limits.read_timeout, self._body_expired)
            return
        self.transport.close()  # type: ignore[attr-defined]


async def _busy(scope: Scope, receive: Receive, send: Send) -> None:
    """The answer beyond ``max_connections``: 503 with an ``{"error", "message"}`` body."""
    for message in _error_response(503, "ServiceUnavailable",
                                   "the server has too many connections open; retry shortly."):
        await send(message)


def _protocol(limits: Limits) -> type:
    """uvicorn's connection class (httptools' parser when installed, else h11) with
    :class:`_Guard`'s limits; its 503 beyond ``max_connections`` is JSON."""
    from uvicorn.protocols.http import h11_impl

    h11_impl.service_unavailable = _busy  # the name both modules call beyond the limit
    try:
        from uvicorn.protocols.http import httptools_impl

        httptools_impl.service_unavailable = _busy
        Base = httptools_impl.HttpToolsProtocol
    except ImportError:
        Base = h11_impl.H11Protocol
    return type("GuardedProtocol", (_Guard, Base), {"limits": limits})


# --- the application side: body size, JSON depth, access log ------------------------------------


_NOT_STRUCTURE = bytes(c for c in range(256) if c not in b'[]{}"')


def guarded_route(on_error: Callable[[Any, Exception], Any]) -> type:
    """A FastAPI route class whose handler never lets an exception reach the server.

    The framework's own errors (unknown paths, bodies that do not fit their model) go on to the
    application's exception handlers; a client that left gets a bare 400 (nobody reads it);
    every other exception becomes ``on_error(request, exc)``, the application's error response.
    """
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute
    from starlette.exceptions import HTTPException
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

    class GuardedRoute(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def guarded(request: Any) -> Any:
                try:
                    return await handler(request)
                except (HTTPException, RequestValidationError):
                    raise
                except ClientDisconnect:
                    return Response(status_code=400)
                except Exception as exc:  # noqa: BLE001 - one request never stops the server
                    return on_error(request, exc)

            return guarded

    return GuardedRoute


def json_depth_exceeds(raw: bytes, limit: int) -> bool:
    """Whether the JSON text ``raw`` nests arrays and objects more than ``limit`` deep.

    Strings are skipped; each pass removes the innermost pairs of brackets, so at most
    ``limit`` passes run over the brackets (C speed, whatever the body). Brackets left unclosed
    count too: a body of 100,000 ``[`` is refused here, not in the parser."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    brackets = b"".join(unescaped.translate(None, _NOT_STRUCTURE).split(b'"')[::2])
    if b"[" * (limit + 1) in brackets.replace(b"{", b"["):
        return True
    for _ in range(limit):
        if not brackets:
            return False
        shorter = brackets.replace(b"[]", b"").replace(b"{}", b"")
        if len(shorter) == len(brackets):
            break
        brackets = shorter
    if b"[]" in brackets or b"{}" in brackets:
        return True
    return brackets.count(b"[") + brackets.count(b"{") > limit


def _error_response(status: int, kind: str, message: str) -> tuple[dict, dict]:
    body = json.dumps({"error": kind, "message": message}).encode("utf-8")
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json; charset=utf-8"),
                         (b"content-length", str(len(body)).encode()),
                         (b"connection", b"close")]},
            {"type": "http.response.body", "body": body})


class BodyLimits:
    """ASGI middleware: bodies over ``max_body`` bytes get 413 (unread when declared), JSON
    bodies nesting deeper than ``max_json_depth`` get 400; both ``{"error", "message"}``."""

    def __init__(self, app: Callable, max_body: int, max_json_depth: int | None) -> None:
        self.app, self.max_body, self.max_json_depth = app, max_body, max_json_depth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        too_large = ("PayloadTooLarge",
                     f"the request body must be at most {self.max_body} bytes.")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            for message in _error_response(413 if declared.isdigit() else 400, *too_large):
                await send(message)
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
            if size > self.max_body:
                for out in _error_response(413, *too_large):
                    await send(out)
                return
        raw = b"".join(chunks)
        if self.max_json_depth is not None and raw and json_depth_exceeds(raw,
                                                                          self.max_json_depth):
            for out in _error_response(400, "ValidationError",
                                       f"the request body nests arrays and objects more than "
                                       f"{self.max_json_depth} deep."):
                await send(out)
            return
        replayed = False

        async def replay() -> dict[str, Any]:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": raw, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def printable(text: Any, limit: int = 2048) -> str:
    """``text`` (str, or bytes read as Latin-1) fit for one log line: every character that is
    not printable (newlines, escapes, NUL, Unicode format characters such as U+202E) written
    as ``\\xNN``/``\\uNNNN``, and a backslash as ``\\\\``, so nothing from a request can start a
    line of its own; cut to ``limit`` characters (``…`` at the end when cut)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("latin-1")
    text = str(text)
    cut = len(text) > limit
    text = text[:limit]
    if not text.isprintable() or "\\" in text:
        text = "".join(c if c.isprintable() and c != "\\" else
                       ("\\\\" if c == "\\" else c.encode("unicode_escape").decode("ascii"))
                       for c in text)
    return text + ("…" if cut else "")


def unparsable_body_message(exc: BaseException) -> str:
    """The message of a 400 for a body the JSON parser gave up on (``exc``: the framework's
    exception, its ``__cause__`` the parser's), saying what is wrong when known."""
    import sys

    cause = exc.__cause__
    if isinstance(cause, ValueError) and "integer string conversion" in str(cause):
        return (f"the request body holds an integer of more than "
                f"{sys.get_int_max_str_digits()} digits; no field takes one that long.")
    return "the request body cannot be parsed as JSON."


class AccessLog:
    """ASGI middleware: one line per request, ``CLIENT "METHOD PATH" STATUS``, never the query
    string (a presigned URL's query is a credential); the method and path are escaped with
    :func:`printable` (a ``%0A`` in a path cannot forge a line)."""

    def __init__(self, app: Callable, logger: logging.Logger) -> None:
        self.app, self.log = app, logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: list[int] = []

        async def sending(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            client = scope.get("client") or ("-", 0)
            query = " (query withheld)" if scope.get("query_string") else ""
            self.log.info("%s \"%s %s%s\" %s", printable(client[0]), printable(scope["method"]),
                          printable(scope["path"]), query, status[0] if status else "-")


# --- the server -------------------------------------------------------------------------------


class Server:
    """``app`` (ASGI) on ``host:port`` with ``limits``; the socket listens from construction
    on, so ``server_address`` is known before serving (``port`` 0: any free port).

    ``serve_forever()`` serves until SIGTERM/SIGINT (in the main thread) or ``shutdown()``
    (from another thread), finishing the requests in flight; ``server_close()`` releases the
    socket. The same three calls as ``http.server``'s servers."""

    def __init__(self, app: Callable, host: str = "127.0.0.1", port: int = 0, *,
                 limits: Limits | None = None, logger: logging.Logger | None = None) -> None:
        import uvicorn

        self.limits = limits or Limits()
        logger = logger or logging.getLogger("nitronb.http")
        if self.limits.max_body is not None:
            app = BodyLimits(app, self.limits.max_body, self.limits.max_json_depth)
        app = AccessLog(app, logger)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.socket(family, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind((host, port))
        self.socket.listen(self.limits.backlog)  # connections wait in the backlog until served
        self.socket.set_inheritable(True)
        self.server_address = self.socket.getsockname()[:2]
        config = uvicorn.Config(
            app, http=_protocol(self.limits), lifespan="off", log_config=None,
            access_log=False, server_header=False, ws="none", interface="asgi3",
            timeout_keep_alive=self.limits.idle_timeout,  # type: ignore[arg-type]
            timeout_graceful_shutdown=self.limits.shutdown_timeout,  # type: ignore[arg-type]
            backlog=self.limits.backlog, limit_concurrency=self.limits.max_connections,
            h11_max_incomplete_event_size=MAX_HEAD)
        self._server = _UvicornServer(config)
        self._done = threading.Event()

    def serve_forever(self) -> None:
        """Serve until a signal or :meth:`shutdown`; requests in flight finish first."""
        self._done.clear()
        try:
            self._server.run(sockets=[self.socket])
        finally:
            self._done.set()

    def shutdown(self) -> None:
        """Ask :meth:`serve_forever` (running in another thread) to stop; wait until it has."""
        self._server.should_exit = True
        self._done.wait(self.limits.shutdown_timeout + 5)

    def server_close(self) -> None:
        self.socket.close()


class _UvicornServer:
    """uvicorn's Server, whose signal handling returns normally after a graceful shutdown
    (uvicorn's own re-raises the signal, which would end the process with it)."""

    def __new__(cls, config: Any) -> Any:
        import uvicorn

        class Quiet(uvicorn.Server):
            @contextlib.contextmanager
            def capture_signals(self) -> Iterator[None]:
                if threading.current_thread() is not threading.main_thread():
                    yield
                    return
                handled = (signal.SIGINT, signal.SIGTERM)
                previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
                try:
                    yield
                finally:
                    for sig, handler in previous.items():
                        signal.signal(sig, handler)

        return Quiet(config)


def _framed(app: Callable) -> Callable:
    """The WSGI ``app`` with the environ keys of werkzeug's server: ``RAW_URI``/``REQUEST_URI``
    (the request target as sent: S3 signatures and moto's key names are computed from it) and
    ``wsgi.input_terminated`` (each body arrives de-chunked and ends at its end, so a body sent
    without Content-Length is read too)."""
    def framed(environ: dict[str, Any], start_response: Callable) -> Any:
        scope = environ.get("asgi.scope") or {}
        raw = (scope.get("raw_path") or environ["PATH_INFO"].encode("latin-1")).decode("latin-1")
        query = environ.get("QUERY_STRING")
        environ["RAW_URI"] = environ["REQUEST_URI"] = raw + ("?" + query if query else "")
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)
    return framed


def wsgi_server(app: Callable, host: str = "127.0.0.1", port: int = 0, *,
                limits: Limits | None = None, logger: logging.Logger | None = None,
                threads: int = 32) -> Server:
    """A :class:`Server` (not yet serving) of the WSGI ``app``, run in a pool of ``threads``
    (a2wsgi; requests beyond wait for a thread, their bytes in the socket)."""
    from a2wsgi import WSGIMiddleware

    return Server(WSGIMiddleware(_framed(app), workers=threads), host, port, limits=limits,
                  logger=logger)

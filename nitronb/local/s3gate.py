"""The local S3 endpoint: moto's S3 application behind a gate that checks signatures as S3 does.

moto accepts any signature and never expires a presigned URL. The gate is WSGI middleware in
front of moto's S3 app (same process, no extra hop): it checks every request's signature as S3
does (:class:`~nitronb.local.s3auth.SignatureChecker`: botocore's own signers, SigV4 and the legacy
``AWSAccessKeyId``/``Signature``/``Expires`` form, presigned query or ``Authorization`` header,
against the local credentials; expiry, region, clock) and answers the way S3 does
(``AccessDenied`` "Request has expired", ``SignatureDoesNotMatch``, ``InvalidAccessKeyId`` …).
Request bodies are hashed as they stream in: one that does not match its ``Content-MD5``,
``x-amz-checksum-*`` or hex ``x-amz-content-sha256`` header is refused as S3 refuses it
(``BadDigest``, ``XAmzContentSHA256Mismatch``) before moto stores it.

Object bodies never pass through moto whole: uploads (PutObject, UploadPart) stream into files
and downloads (GetObject, ranges included) stream out of them (:mod:`nitronb.local.s3stream`), while
moto decides every answer's status and headers; other requests go to moto unchanged.

Each successful change is written to :class:`~nitronb.local.s3store.S3Store` in the workspace before
it is acknowledged, and the store is loaded back when the endpoint starts; SIGTERM stops it
cleanly.

Run as ``python -m nitronb.local.s3gate --workspace WS --host 127.0.0.1 --port PORT``.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import shutil
import sys
import uuid
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable, Iterable
from xml.sax.saxutils import escape

from nitronb.local.s3auth import (LOCAL_REGION, MAX_CLOCK_SKEW, MAX_SIGV4_EXPIRY,  # noqa: F401
                                  SignatureChecker, _Incoming, credentials_path, load_credentials)
from nitronb.local.s3digest import BodyMismatch, Rejection, VerifyingInput, verifying_input
from nitronb.local.s3stream import StreamedObjects, route

#: the bucket the walk-through uses, created when the endpoint starts
DEFAULT_BUCKET = "nitronb"
#: path of the gate's own health check (``_`` cannot start a bucket name, so it never collides)
HEALTH_PATH = "/_nitronb/health"
_DRAIN_LIMIT = 64 * 1024 * 1024


# --- the WSGI layer -------------------------------------------------------------------------


class S3Gate:
    """WSGI middleware: lets a request through to ``app`` only if S3 would accept its signature."""

    def __init__(self, app: Callable, checker: SignatureChecker, *,
                 ready: Callable[[], bool] = lambda: True, store: Any = None,
                 streams: StreamedObjects | None = None) -> None:
        self._app = app
        self._checker = checker
        self._ready = ready
        #: an :class:`~nitronb.local.s3store.S3Store` that each successful change is written to
        self.store = store
        #: the data path that streams object bodies to and from the store's files, if any
        self.streams = streams

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            ok = self._ready()
            body = json.dumps({"status": "ok" if ok else "starting"}).encode()
            start_response("200 OK" if ok else "503 Service Unavailable",
                           [("Content-Type", "application/json"),
                            ("Content-Length", str(len(body)))])
            return [body]
        try:
            if path.startswith("/moto-api"):
                raise Rejection(403, "AccessDenied", "Access Denied")
            incoming = _Incoming.from_environ(environ)
            self._checker.check(incoming)
            reader = verifying_input(environ, incoming.headers)
        except Rejection as rejection:
            return self._refuse(environ, start_response, rejection)
        changes = self.store is not None and incoming.method not in ("GET", "HEAD", "OPTIONS")
        kind = self.streams and route(incoming.method, incoming.host, incoming.raw_path,
                                      incoming.query, incoming.headers)
        if kind in ("get", "head"):
            try:
                while reader is not None and reader.read(1 << 16):
                    pass  # a GET's body (none, normally) must match its headers too
                if kind == "head":
                    return self.streams.head(environ, start_response)  # type: ignore[union-attr]
                return self.streams.serve(environ, start_response)  # type: ignore[union-attr]
            except Rejection as rejection:
                return self._refuse(environ, start_response, rejection)
        if reader is None and not changes:
            return self._app(environ, start_response)
        if self.streams is None:
            return self._change(environ, start_response, incoming, reader, changes, self._app)
        app = self._app
        if kind in ("put", "part"):
            app = functools.partial(self.streams.receive, kind=kind, query=incoming.query,
                                    headers=incoming.headers)
        elif kind == "copy":
            app = self.streams.copy
        elif incoming.method == "POST" and any(n == "uploadId" for n, _ in incoming.query):
            app = functools.partial(self.streams.complete, query=incoming.query)
        try:
            return self._change(environ, start_response, incoming, reader, changes, app)
        finally:
            self.streams.finished(environ, incoming.query)

    def _change(self, environ: dict[str, Any], start_response: Callable, req: _Incoming,
                reader: VerifyingInput | None, changes: bool, app: Callable) -> Iterable[bytes]:
        """Pass a request whose body must match its headers or that may change the store;
        answer only once its body is known to match and the change is on disk."""
        answer: dict[str, Any] = {}

        def hold(status: str, headers: list, exc_info: Any = None) -> Callable[[bytes], Any]:
            answer.update(status=status, headers=headers, exc_info=exc_info)

            def write(data: bytes) -> Any:  # the legacy write() path: start for real, once
                if "write" not in answer:
                    answer["write"] = start_response(status, headers, exc_info)
                return answer["write"](data)
            return write

        with self.store.changing() if changes else contextlib.nullcontext():
            try:
                if changes:  # no room for the change: refused before moto acts on it
                    self.store.check_room(req.method, req.raw_path, req.query, req.headers)
            except OSError as exc:
                return self._refuse(environ, start_response, _unsaved(req, exc))
            try:
                body = app(environ, hold)
            except BodyMismatch as mismatch:  # raised by the reader, before moto acted on it
                return self._refuse(environ, start_response, mismatch)
            except OSError as exc:  # a streamed body could not be written: moto never saw it
                if app is self._app:
                    raise
                return self._refuse(environ, start_response, _unsaved(req, exc))
            if reader is not None and reader.rejection is not None:
                if hasattr(body, "close"):  # the application answered the error itself
                    body.close()
                return self._refuse(environ, start_response, reader.rejection)
            status = answer.get("status", "200")
            if changes and status[:1] == "2":
                try:
                    self.store.record(req.method, req.raw_path,
                                      {name for name, _ in req.query})
                except Exception as exc:  # the change is not durable: do not acknowledge it
                    if hasattr(body, "close"):
                        body.close()
                    return self._refuse(environ, start_response, _unsaved(req, exc))
        if answer and "write" not in answer:
            start_response(answer["status"], answer["headers"], answer["exc_info"])
        return body

    @staticmethod
    def _refuse(environ: dict[str, Any], start_response: Callable,
                rejection: Rejection) -> Iterable[bytes]:
        request_id = uuid.uuid4().hex[:16].upper()
        extra = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in (rejection.extra or {}).items())
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{rejection.code}</Code>'
                f"<Message>{escape(rejection.message)}</Message>{extra}"
                f"<RequestId>{request_id}</RequestId><HostId>nitronb-local</HostId></Error>"
                ).encode()
        headers = [("Content-Type", "application/xml"), ("x-amz-request-id", request_id),
                   ("Date", formatdate(usegmt=True)), ("Content-Length", str(len(body)))]
        _drain(environ)
        start_response(f"{rejection.status} {_REASONS.get(rejection.status, 'Error')}", headers)
        return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


_REASONS = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error",
            507: "Insufficient Storage"}


def _unsaved(req: _Incoming, exc: BaseException) -> Rejection:
    """The answer to a change the store could not write (and took back): 507 when the disk is
    full, else 500 ``InternalError``."""
    from nitronb.http_server import printable
    from nitronb.local.s3store import is_disk_full

    print(f"s3gate: could not save {printable(req.method)} {printable(req.raw_path)} to disk: "
          f"{exc!r}; nothing changed",
          file=sys.stderr, flush=True)
    if is_disk_full(exc):
        return Rejection(507, "InsufficientStorage", "The local endpoint's disk is full; "
                         "nothing was changed. Free space in the workspace and try again.")
    return Rejection(500, "InternalError", "The change could not be saved to disk on the local "
                     f"endpoint ({type(exc).__name__}); nothing was changed. Try again.")



def _drain(environ: dict[str, Any]) -> None:
    """Read and drop a refused request's body so the client sees the answer, not a reset."""
    try:
        remaining = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return
    stream = environ.get("wsgi.input")
    if getattr(stream, "finished", False):  # already read to its end
        return
    remaining = min(remaining, _DRAIN_LIMIT)
    while stream is not None and remaining > 0:
        chunk = stream.read(min(remaining, 1 << 20))
        if not chunk:
            break
        remaining -= len(chunk)


# --- the process ----------------------------------------------------------------------------


def _two_heaps() -> None:
    """Keep glibc to two heaps for the server's threads (its default is eight per core, each
    holding on to the pieces of bodies its thread freed), so that the process's memory follows
    the bytes in flight, not the sum of every thread's largest burst of them."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc: its allocator's defaults stay
        return
    mallopt(-8, 2)  # M_ARENA_MAX


def build_app(workspace: Path) -> tuple[Callable, Callable[[], None]]:
    """The gated moto S3 application for ``workspace`` (``.store`` keeps it on disk), and a
    function that loads the stored buckets and objects and creates the default bucket."""
    from moto.moto_server.werkzeug_app import create_backend_app

    credentials = load_credentials(workspace, create=True)
    checker = SignatureChecker({credentials["access_key_id"]: credentials["secret_access_key"]})
    state = {"ready": False}

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from nitronb.local.s3files import install
    from nitronb.local.s3store import S3Store, data_dir
    from nitronb.local.s3stream import scratch_dir

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    store = S3Store(data_dir(workspace), backend)

    install()
    moto = create_backend_app("s3")
    streams = StreamedObjects(moto, scratch_dir(store.root), lambda: {
        upload for bucket in list(backend.buckets.values()) for upload in list(bucket.multiparts)})

    def prepare() -> None:
        shutil.rmtree(streams.scratch, ignore_errors=True)  # unfinished uploads are not kept
        counts = store.restore()
        if DEFAULT_BUCKET not in backend.buckets:
            backend.create_bucket(DEFAULT_BUCKET, LOCAL_REGION)
            store.sync_bucket(DEFAULT_BUCKET)
        print(f"restored {counts['objects']} object(s) in {counts['buckets']} bucket(s) from "
              f"{store.root}", file=sys.stderr, flush=True)
        state["ready"] = True

    gate = S3Gate(moto, checker, ready=lambda: state["ready"], store=store, streams=streams)
    return gate, prepare


def main(argv: list[str] | None = None) -> int:
    import logging

    from nitronb.http_server import add_arguments, limits_from, wsgi_server

    parser = argparse.ArgumentParser(prog="python -m nitronb.local.s3gate",
                                     description="The local S3 endpoint (moto behind a gate).")
    parser.add_argument("--workspace", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    add_arguments(parser)
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the local S3 endpoint binds the loopback interface only")

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _two_heaps()
    app, prepare = build_app(Path(args.workspace))
    server = wsgi_server(app, args.host, args.port, limits=limits_from(args),
                         logger=logging.getLogger("nitronb.local.s3gate"))
    prepare()
    print(f"local S3 endpoint on http://{args.host}:{server.server_address[1]}",
          file=sys.stderr, flush=True)
    try:
        server.serve_forever()  # until SIGTERM or SIGINT; requests in flight finish first
    finally:
        app.store.close()
        server.server_close()
        print("local S3 endpoint stopped; its objects are in "
              f"{app.store.root}", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

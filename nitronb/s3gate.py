"""The local S3 endpoint: moto's S3 application behind a gate that checks signatures as S3 does.

moto accepts any signature and never expires a presigned URL. The gate is WSGI middleware in
front of moto's S3 app (same process, no extra hop): it recomputes every request's signature with
botocore's own signers (SigV4 and the legacy ``AWSAccessKeyId``/``Signature``/``Expires`` form,
presigned query or ``Authorization`` header) against the local credentials, checks expiry, and
answers the way S3 does (``AccessDenied`` "Request has expired", ``SignatureDoesNotMatch``,
``InvalidAccessKeyId`` …). Request bodies stream through to moto, hashed on the way: one that
does not match its ``Content-MD5``, ``x-amz-checksum-*`` or hex ``x-amz-content-sha256`` header
is refused as S3 refuses it (``BadDigest``, ``XAmzContentSHA256Mismatch``) before moto stores it.
Response bodies pass through untouched.

Each successful change is written to :class:`~nitronb.s3store.S3Store` in the workspace before
it is acknowledged, and the store is loaded back when the endpoint starts; SIGTERM stops it
cleanly.

Run as ``python -m nitronb.s3gate --workspace WS --host 127.0.0.1 --port PORT``.
"""

from __future__ import annotations

import argparse
import calendar
import contextlib
import hmac
import json
import os
import secrets
import string
import sys
import time
import uuid
from dataclasses import dataclass
from email.utils import formatdate
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import quote, unquote
from xml.sax.saxutils import escape

from nitronb.s3digest import BodyMismatch, Rejection, VerifyingInput, verifying_input

#: the bucket the walk-through uses, created when the endpoint starts
DEFAULT_BUCKET = "nitronb"
#: the region the local endpoint claims to be in
LOCAL_REGION = "us-east-1"
#: path of the gate's own health check (``_`` cannot start a bucket name, so it never collides)
HEALTH_PATH = "/_nitronb/health"
#: the longest a SigV4 presigned URL may live (S3's rule: one week)
MAX_SIGV4_EXPIRY = 604800
#: how far a header-signed request's clock may be off (S3 allows 15 minutes)
MAX_CLOCK_SKEW = 15 * 60
_DRAIN_LIMIT = 64 * 1024 * 1024
_CREDENTIALS_FILE = "s3-credentials.json"


# --- local credentials ----------------------------------------------------------------------


def credentials_path(workspace: Path) -> Path:
    """Where the local endpoint's access key and secret live (mode 0600)."""
    return workspace / "local" / _CREDENTIALS_FILE


def load_credentials(workspace: Path, *, create: bool = False) -> dict[str, str]:
    """The local endpoint's ``{"access_key_id", "secret_access_key", "region"}``.

    With ``create``, random ones are generated (and stored, readable by the owner only) the
    first time.
    """
    path = credentials_path(workspace)
    if path.exists():
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("access_key_id") and data.get("secret_access_key"):
            return {"region": LOCAL_REGION, **data}
    if not create:
        from nitronb.errors import CredentialsMissingError

        raise CredentialsMissingError(
            f"no credentials for the local S3 endpoint in {path}.",
            hint="Start the local stack with `nitronb local up`; it creates them.")
    upper = string.ascii_uppercase + "234567"
    data = {
        "access_key_id": "AKIA" + "".join(secrets.choice(upper) for _ in range(16)),
        "secret_access_key": secrets.token_urlsafe(30)[:40],
        "region": LOCAL_REGION,
    }
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2)
    os.chmod(path, 0o600)
    return data


# --- the checks -----------------------------------------------------------------------------


@dataclass
class _Incoming:
    method: str
    host: str
    raw_path: str
    query: list[tuple[str, str]]
    raw_query: str
    headers: dict[str, str]

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> "_Incoming":
        raw_uri = environ.get("REQUEST_URI") or environ.get("RAW_URI") or ""
        if raw_uri:
            raw_path = raw_uri.split("?", 1)[0]
        else:  # a server that keeps no raw request line: re-encode as botocore does
            raw_path = quote(environ.get("PATH_INFO", "/").encode("latin-1"), safe="/~")
        if "://" in raw_path:  # an absolute-form request target
            raw_path = "/" + raw_path.split("://", 1)[1].partition("/")[2]
        raw_query = environ.get("QUERY_STRING", "")
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        host = headers.get("host") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        return cls(environ["REQUEST_METHOD"].upper(), host, raw_path or "/",
                   _parse_query(raw_query), raw_query, headers)

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None


def _parse_query(raw: str) -> list[tuple[str, str]]:
    pairs = []
    for part in raw.split("&"):
        if part:
            key, _, value = part.partition("=")
            pairs.append((unquote(key), unquote(value)))
    return pairs


class SignatureChecker:
    """Recomputes a request's signature with botocore's signers and checks its validity period."""

    def __init__(self, secrets_by_key: dict[str, str], *, clock: Callable[[], float] = time.time):
        self._secrets = dict(secrets_by_key)
        self._clock = clock

    def check(self, req: _Incoming) -> None:
        """Return if the request is signed by a known key and still valid; raise Rejection if not."""
        auth = req.headers.get("authorization", "")
        if req.param("X-Amz-Signature") is not None or req.param("X-Amz-Algorithm") is not None:
            self._check_sigv4_query(req)
        elif req.param("Signature") is not None and req.param("AWSAccessKeyId") is not None:
            self._check_v2_query(req)
        elif auth.startswith("AWS4-HMAC-SHA256"):
            self._check_sigv4_header(req, auth)
        elif auth.startswith("AWS "):
            self._check_v2_header(req, auth)
        else:
            raise Rejection(403, "AccessDenied", "Access Denied")

    # SigV4 ------------------------------------------------------------------------------------

    def _check_sigv4_query(self, req: _Incoming) -> None:
        names = ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
                 "X-Amz-SignedHeaders", "X-Amz-Signature")
        values = {n: req.param(n) for n in names}
        missing = [n for n, v in values.items() if not v]
        if missing:
            raise Rejection(400, "AuthorizationQueryParametersError",
                            f"Query-string authentication version 4 requires the {', '.join(missing)} "
                            "parameters.")
        if values["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
            raise Rejection(400, "AuthorizationQueryParametersError",
                            "X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
        access_key, region, service = self._scope(values["X-Amz-Credential"], values["X-Amz-Date"])
        try:
            expires = int(values["X-Amz-Expires"])
        except ValueError:
            expires = -1
        if not 0 < expires <= MAX_SIGV4_EXPIRY:
            raise Rejection(400, "AuthorizationQueryParametersError",
                            "X-Amz-Expires must be less than a week (in seconds) that is 604800")
        signed_at = _parse_amz_date(values["X-Amz-Date"])
        now = self._clock()
        if now > signed_at + expires:
            raise Rejection(403, "AccessDenied", "Request has expired", {
                "X-Amz-Expires": str(expires),
                "Expires": _iso(signed_at + expires), "ServerTime": _iso(now)})
        if signed_at > now + MAX_CLOCK_SKEW:
            raise Rejection(403, "AccessDenied", "Request is not valid yet")
        params = [(k, v) for k, v in req.query if k != "X-Amz-Signature"]
        headers = self._signed_headers(req, values["X-Amz-SignedHeaders"])
        self._verify_sigv4(req, "query", access_key, region, service, values["X-Amz-Date"],
                           headers, params, values["X-Amz-Signature"])

    def _check_sigv4_header(self, req: _Incoming, auth: str) -> None:
        fields = {}
        for item in auth[len("AWS4-HMAC-SHA256"):].split(","):
            key, _, value = item.strip().partition("=")
            fields[key] = value
        if not all(fields.get(k) for k in ("Credential", "SignedHeaders", "Signature")):
            raise Rejection(400, "AuthorizationHeaderMalformed",
                            "The authorization header is malformed; it must name Credential, "
                            "SignedHeaders and Signature.")
        amz_date = req.headers.get("x-amz-date")
        if not amz_date:
            raise Rejection(403, "AccessDenied",
                            "AWS authentication requires a valid Date or x-amz-date header")
        access_key, region, service = self._scope(fields["Credential"], amz_date)
        signed_at = _parse_amz_date(amz_date)
        now = self._clock()
        if abs(now - signed_at) > MAX_CLOCK_SKEW:
            raise Rejection(403, "RequestTimeTooSkewed",
                            "The difference between the request time and the current time is too "
                            "large.", {"RequestTime": amz_date, "ServerTime": _iso(now)})
        headers = self._signed_headers(req, fields["SignedHeaders"])
        self._verify_sigv4(req, "header", access_key, region, service, amz_date, headers,
                           list(req.query), fields["Signature"])

    def _scope(self, credential: str, amz_date: str) -> tuple[str, str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise Rejection(400, "AuthorizationQueryParametersError",
                            "Error parsing the X-Amz-Credential parameter; the Credential is "
                            "mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/"
                            "aws4_request\".")
        access_key, day, region, service, _ = parts
        if access_key not in self._secrets:
            raise Rejection(403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.",
                            {"AWSAccessKeyId": access_key})
        if service != "s3":
            raise Rejection(400, "AuthorizationQueryParametersError",
                            f"Error parsing the X-Amz-Credential parameter; incorrect service "
                            f"\"{service}\". This endpoint belongs to \"s3\".")
        if not amz_date.startswith(day):
            raise Rejection(403, "SignatureDoesNotMatch",
                            "The date in the credential scope does not match the request date.")
        _parse_amz_date(amz_date)
        return access_key, region, service

    @staticmethod
    def _signed_headers(req: _Incoming, names: str) -> list[tuple[str, str]]:
        signed = names.lower().split(";")
        unsigned = sorted(n for n in req.headers if n.startswith("x-amz-") and n not in signed)
        if unsigned:
            raise Rejection(403, "AccessDenied", "There were headers present in the request "
                            "which were not signed", {"HeadersNotSigned": ", ".join(unsigned)})
        headers = []
        for name in signed:
            if name == "host":
                headers.append(("host", req.host))
            elif name in req.headers:
                headers.append((name, req.headers[name]))
            else:
                raise Rejection(403, "SignatureDoesNotMatch",
                                f"The request signature we calculated does not match the signature "
                                f"you provided: the signed header {name!r} is missing.")
        return headers

    def _verify_sigv4(self, req: _Incoming, form: str, access_key: str, region: str, service: str,
                      amz_date: str, headers: list[tuple[str, str]],
                      params: list[tuple[str, str]], provided: str) -> None:
        from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth
        from botocore.awsrequest import AWSRequest
        from botocore.credentials import Credentials

        credentials = Credentials(access_key, self._secrets[access_key])
        signer_class = S3SigV4QueryAuth if form == "query" else S3SigV4Auth
        signer = signer_class(credentials, service, region)
        request = AWSRequest(method=req.method, url=f"http://{req.host}{req.raw_path}",
                             headers=dict(headers), params=params or None)
        request.context["timestamp"] = amz_date
        canonical = signer.canonical_request(request)
        to_sign = signer.string_to_sign(request, canonical)
        expected = signer.signature(to_sign, request)
        if not hmac.compare_digest(expected, provided.strip().lower()):
            raise _mismatch(access_key, to_sign, provided, canonical)

    # legacy (signature version 2, "HmacV1") --------------------------------------------------

    def _check_v2_query(self, req: _Incoming) -> None:
        access_key = req.param("AWSAccessKeyId") or ""
        expires_text = req.param("Expires") or ""
        if access_key not in self._secrets:
            raise Rejection(403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.",
                            {"AWSAccessKeyId": access_key})
        try:
            expires = int(expires_text)
        except ValueError:
            raise Rejection(403, "AccessDenied",
                            "Query-string authentication requires the Signature, Expires and "
                            "AWSAccessKeyId parameters") from None
        now = self._clock()
        if now > expires:
            raise Rejection(403, "AccessDenied", "Request has expired",
                            {"Expires": _iso(expires), "ServerTime": _iso(now)})
        self._verify_v2(req, access_key, expires_text, req.param("Signature") or "")

    def _check_v2_header(self, req: _Incoming, auth: str) -> None:
        access_key, _, provided = auth[4:].strip().rpartition(":")
        if access_key not in self._secrets:
            raise Rejection(403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.",
                            {"AWSAccessKeyId": access_key})
        date = "" if "x-amz-date" in req.headers else req.headers.get("date", "")
        self._verify_v2(req, access_key, date, provided)

    def _verify_v2(self, req: _Incoming, access_key: str, date_line: str, provided: str) -> None:
        from urllib.parse import urlsplit

        from botocore.auth import HmacV1Auth
        from botocore.awsrequest import HTTPHeaders
        from botocore.credentials import Credentials

        signer = HmacV1Auth(Credentials(access_key, self._secrets[access_key]))
        signer._get_date = lambda: date_line  # the date the client signed, not "now"
        headers = HTTPHeaders()
        for name, value in req.headers.items():
            if name in ("content-md5", "content-type") or name.startswith("x-amz-"):
                headers[name] = value
        split = urlsplit(f"http://{req.host}{req.raw_path}?{req.raw_query}")
        to_sign = signer.canonical_string(req.method, split, headers)
        expected = signer.sign_string(to_sign)
        if not hmac.compare_digest(expected, provided):
            raise _mismatch(access_key, to_sign, provided, None)


def _mismatch(access_key: str, to_sign: str, provided: str, canonical: str | None) -> Rejection:
    extra = {"AWSAccessKeyId": access_key, "StringToSign": to_sign,
             "SignatureProvided": provided}
    if canonical is not None:
        extra["CanonicalRequest"] = canonical
    return Rejection(403, "SignatureDoesNotMatch",
                     "The request signature we calculated does not match the signature you "
                     "provided. Check your key and signing method.", extra)


def _parse_amz_date(value: str) -> float:
    try:
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise Rejection(403, "AccessDenied",
                        f"X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"; "
                        f"got {value!r}") from None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


# --- the WSGI layer -------------------------------------------------------------------------


class S3Gate:
    """WSGI middleware: lets a request through to ``app`` only if S3 would accept its signature."""

    def __init__(self, app: Callable, checker: SignatureChecker, *,
                 ready: Callable[[], bool] = lambda: True, store: Any = None) -> None:
        self._app = app
        self._checker = checker
        self._ready = ready
        #: an :class:`~nitronb.s3store.S3Store` that each successful change is written to
        self.store = store

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
        if reader is None and not changes:
            return self._app(environ, start_response)
        return self._change(environ, start_response, incoming, reader, changes)

    def _change(self, environ: dict[str, Any], start_response: Callable, req: _Incoming,
                reader: VerifyingInput | None, changes: bool) -> Iterable[bytes]:
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
                body = self._app(environ, hold)
            except BodyMismatch as mismatch:  # raised by the reader, before moto acted on it
                return self._refuse(environ, start_response, mismatch)
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
                    print(f"s3gate: could not save {req.method} {req.raw_path} to disk: {exc!r}",
                          file=sys.stderr, flush=True)
                    return self._refuse(environ, start_response, Rejection(
                        500, "InternalError", "The change could not be saved to disk on the "
                        f"local endpoint ({type(exc).__name__}: {exc}); try again."))
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


_REASONS = {400: "Bad Request", 403: "Forbidden", 500: "Internal Server Error"}



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


def build_app(workspace: Path) -> tuple[Callable, Callable[[], None]]:
    """The gated moto S3 application for ``workspace`` (``.store`` keeps it on disk), and a
    function that loads the stored buckets and objects and creates the default bucket."""
    from moto.moto_server.werkzeug_app import create_backend_app

    credentials = load_credentials(workspace, create=True)
    checker = SignatureChecker({credentials["access_key_id"]: credentials["secret_access_key"]})
    state = {"ready": False}

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    from nitronb.s3store import S3Store, data_dir

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    store = S3Store(data_dir(workspace), backend)

    def prepare() -> None:
        counts = store.restore()
        if DEFAULT_BUCKET not in backend.buckets:
            backend.create_bucket(DEFAULT_BUCKET, LOCAL_REGION)
            store.sync_bucket(DEFAULT_BUCKET)
        print(f"restored {counts['objects']} object(s) in {counts['buckets']} bucket(s) from "
              f"{store.root}", file=sys.stderr, flush=True)
        state["ready"] = True

    gate = S3Gate(create_backend_app("s3"), checker, ready=lambda: state["ready"], store=store)
    return gate, prepare


def main(argv: list[str] | None = None) -> int:
    import logging

    from nitronb.http_server import add_arguments, limits_from, wsgi_server

    parser = argparse.ArgumentParser(prog="python -m nitronb.s3gate",
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
    app, prepare = build_app(Path(args.workspace))
    server = wsgi_server(app, args.host, args.port, limits=limits_from(args),
                         logger=logging.getLogger("nitronb.s3gate"))
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

"""What the local S3 endpoint accepts: its credentials, and the signature checks S3 makes.

:class:`SignatureChecker` recomputes a request's signature with botocore's own signers (SigV4 and
the legacy ``AWSAccessKeyId``/``Signature``/``Expires`` form, presigned query or
``Authorization`` header) against the local credentials, checks the region, the validity period
and the clock, and raises :class:`~nitronb.local.s3digest.Rejection` with the error S3 answers
(``AccessDenied`` "Request has expired", ``SignatureDoesNotMatch``, ``InvalidAccessKeyId``,
``AuthorizationQueryParametersError`` …). Signatures are compared exactly (SigV4's are lower-case
hex), an authentication parameter given twice in the query is refused, and ``X-Amz-Expires``
must be a whole number of seconds from 1 to 604800. Whatever a client sends, the answer is one
of those: a path, query or header that cannot be read is refused like S3 refuses it (``InvalidURI``,
``InvalidArgument``), never a crash. Used by the gate, :mod:`nitronb.local.s3gate`.
"""

from __future__ import annotations

import calendar
import contextlib
import hmac
import json
import os
import re
import secrets
import string
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote, unquote, urlsplit

from nitronb.local.s3digest import Rejection

#: the region the local endpoint claims to be in; requests signed for another are refused
LOCAL_REGION = "us-east-1"
#: the longest a SigV4 presigned URL may live (S3's rule: one week)
MAX_SIGV4_EXPIRY = 604800
#: how far a request's date may be off the endpoint's clock (S3 allows 15 minutes)
MAX_CLOCK_SKEW = 15 * 60
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
            return {**data, "region": LOCAL_REGION}  # the endpoint's region, whatever is stored
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
            raw_path = quote(_wire_bytes(environ.get("PATH_INFO", "/")), safe="/~")
        if "://" in raw_path:  # an absolute-form request target
            raw_path = "/" + raw_path.split("://", 1)[1].partition("/")[2]
        _unquote(_utf8(_wire_bytes(raw_path)))  # S3 refuses a path that is not UTF-8
        raw_query = _utf8(_wire_bytes(environ.get("QUERY_STRING", "")))
        headers = {}
        for key, value in environ.items():
            if key.startswith("HTTP_"):
                headers[key[5:].replace("_", "-").lower()] = value
        for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            if environ.get(key):
                headers[key.replace("_", "-").lower()] = environ[key]
        host = headers.get("host") or f"{environ.get('SERVER_NAME')}:{environ.get('SERVER_PORT')}"
        _check_host(host)
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
            pairs.append((_unquote(key), _unquote(value)))
    return pairs


def _check_host(host: str) -> None:
    """Refuse a Host header that is no ``name[:port]``, as S3 refuses it (400)."""
    try:
        parts = urlsplit(f"http://{host}/")
        parts.port  # noqa: B018 - parsing the port is the check
        if parts.netloc != host or not parts.hostname or "@" in host:
            raise ValueError(host)
    except ValueError:
        raise Rejection(400, "InvalidArgument", "The Host header is not a valid host name and "
                        "port.", {"ArgumentName": "Host"}) from None


def _invalid_uri() -> Rejection:
    return Rejection(400, "InvalidURI", "Couldn't parse the specified URI.")


def _wire_bytes(text: str) -> bytes:
    """The bytes a WSGI string (latin-1 decoded, per PEP 3333) came from."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:  # a server that decoded the request line as UTF-8 already
        return text.encode("utf-8", "surrogateescape")


def _utf8(raw: bytes | str) -> str:
    """``raw`` as UTF-8 text; S3 answers ``InvalidURI`` for a path or query that is not."""
    try:
        return raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise _invalid_uri() from None


def _unquote(text: str) -> str:
    try:
        return unquote(text, errors="strict")
    except UnicodeDecodeError:
        raise _invalid_uri() from None


class SignatureChecker:
    """Recomputes a request's signature with botocore's signers and checks its validity period."""

    def __init__(self, secrets_by_key: dict[str, str], *, clock: Callable[[], float] = time.time,
                 region: str = LOCAL_REGION):
        self._secrets = dict(secrets_by_key)
        self._clock = clock
        #: the region a SigV4 request must be signed for
        self.region = region

    def check(self, req: _Incoming) -> None:
        """Return if the request is signed by a known key and still valid; raise Rejection if not."""
        auth = req.headers.get("authorization", "")
        _refuse_repeated_auth_parameters(req.query)
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
        access_key, region, service = self._scope(values["X-Amz-Credential"], values["X-Amz-Date"],
                                                  "AuthorizationQueryParametersError")
        expires = _sigv4_expiry(values["X-Amz-Expires"])
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
        access_key, region, service = self._scope(fields["Credential"], amz_date,
                                                  "AuthorizationHeaderMalformed")
        signed_at = _parse_amz_date(amz_date)
        now = self._clock()
        if abs(now - signed_at) > MAX_CLOCK_SKEW:
            raise Rejection(403, "RequestTimeTooSkewed",
                            "The difference between the request time and the current time is too "
                            "large.", {"RequestTime": amz_date, "ServerTime": _iso(now)})
        headers = self._signed_headers(req, fields["SignedHeaders"])
        self._verify_sigv4(req, "header", access_key, region, service, amz_date, headers,
                           list(req.query), fields["Signature"])

    def _scope(self, credential: str, amz_date: str, malformed: str) -> tuple[str, str, str]:
        """(access key, region, service) of a SigV4 credential scope; ``malformed`` is the S3
        error code for a scope that cannot be used (it differs between query and header)."""
        where = ("the X-Amz-Credential parameter" if malformed == "AuthorizationQueryParametersError"
                 else "the authorization header")
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise Rejection(400, malformed,
                            "Error parsing the X-Amz-Credential parameter; the Credential is "
                            "mal-formed; expecting \"<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/"
                            "aws4_request\".")
        access_key, day, region, service, _ = parts
        if access_key not in self._secrets:
            raise Rejection(403, "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.",
                            {"AWSAccessKeyId": access_key})
        if service != "s3":
            raise Rejection(400, malformed,
                            f"Error parsing {where}; incorrect service "
                            f"\"{service}\". This endpoint belongs to \"s3\".")
        if region != self.region:
            raise Rejection(400, malformed, f"Error parsing {where}; the region '{region}' is "
                            f"wrong; expecting '{self.region}'", {"Region": self.region})
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
        with _unsignable():
            canonical = signer.canonical_request(request)
            to_sign = signer.string_to_sign(request, canonical)
            expected = signer.signature(to_sign, request)
        if not _same(expected, provided):
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
        with _unsignable():
            split = urlsplit(f"http://{req.host}{req.raw_path}?{req.raw_query}")
            to_sign = signer.canonical_string(req.method, split, headers)
            expected = signer.sign_string(to_sign)
        if not _same(expected, provided):
            raise _mismatch(access_key, to_sign, provided, None)


#: query parameters that authenticate a presigned URL: each may appear once
_V2_AUTH_PARAMETERS = frozenset({"AWSAccessKeyId", "Signature", "Expires"})


def _refuse_repeated_auth_parameters(query: list[tuple[str, str]]) -> None:
    """Refuse a query naming an authentication parameter (``X-Amz-*``, or the legacy
    ``AWSAccessKeyId``/``Signature``/``Expires``) more than once, as S3 does: otherwise a
    second ``X-Amz-Signature`` appended to a valid URL would pass unchecked."""
    seen: set[str] = set()
    for name, _ in query:
        if name.lower().startswith("x-amz-") or name in _V2_AUTH_PARAMETERS:
            if name.lower() in seen:
                raise Rejection(400, "AuthorizationQueryParametersError",
                                f"The query parameter {_shown(name)} appears more than once; "
                                "each authentication parameter may be given only once.")
            seen.add(name.lower())


def _sigv4_expiry(text: str) -> int:
    """The seconds of an ``X-Amz-Expires``: a whole number from 1 to 604800 (one week)."""
    if not _DIGITS.fullmatch(text):
        raise Rejection(400, "AuthorizationQueryParametersError",
                        f"X-Amz-Expires must be a whole number of seconds from 1 to "
                        f"{MAX_SIGV4_EXPIRY} (one week); got {_shown(text)}.")
    digits = text.lstrip("0") or "0"
    if len(digits) > len(str(MAX_SIGV4_EXPIRY)) or not 0 < int(digits) <= MAX_SIGV4_EXPIRY:
        raise Rejection(400, "AuthorizationQueryParametersError",
                        f"X-Amz-Expires must be from 1 to {MAX_SIGV4_EXPIRY} seconds (one week); "
                        f"got {_shown(text)}.")
    return int(digits)


_DIGITS = re.compile(r"[0-9]+")


def _shown(text: str, limit: int = 40) -> str:
    """``text`` quoted for an error message, cut to ``limit`` characters."""
    return repr(text if len(text) <= limit else text[:limit] + "…")


@contextlib.contextmanager
def _unsignable() -> Iterator[None]:
    """A request whose parts botocore's signers cannot read is refused (400), not a crash."""
    try:
        yield
    except (ValueError, TypeError, UnicodeError) as exc:
        raise Rejection(400, "InvalidRequest", "The request could not be read to check its "
                        f"signature ({type(exc).__name__}).") from None


def _same(expected: str, provided: str) -> bool:
    """Constant-time comparison of a computed signature with any text a client sent; exact, as
    S3 compares: a SigV4 signature is lower-case hex, so an upper-cased copy does not match."""
    return hmac.compare_digest(expected.encode("utf-8"), provided.encode("utf-8", "replace"))


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
        if not _AMZ_DATE.fullmatch(value):
            raise ValueError(value)
        return float(calendar.timegm(time.strptime(value, "%Y%m%dT%H%M%SZ")))
    except ValueError:
        raise Rejection(403, "AccessDenied",
                        f"X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"; "
                        f"got {value!r}") from None


_AMZ_DATE = re.compile(r"[0-9]{8}T[0-9]{6}Z")


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))

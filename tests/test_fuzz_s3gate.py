"""Fuzzing the S3 gate's request parsing: whatever the query, headers, path or body, the gate
answers an S3 error (4xx, XML with a ``Code``) or lets the request through, never a 5xx or an
exception. Driven as a WSGI application with generated environs, and over real HTTP against the
local S3 endpoint. Settings come from the profile in ``tests/conftest.py``."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import time
from urllib.parse import quote, unquote, urlsplit

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from nitronb.local.s3gate import S3Gate, SignatureChecker

ACCESS = "AKIATESTTESTTESTTEST"
SECRET = "local-secret-0123456789abcdefghijklmnop"
ENDPOINT = "http://127.0.0.1:9000"
BODY = b"object bytes"
SIGNED_AT = time.time()


def _scaled(fraction: float) -> settings:
    return settings(max_examples=max(20, int(settings.default.max_examples * fraction)))


def _client(version: str):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS,
                        aws_secret_access_key=SECRET, region_name="us-east-1",
                        config=Config(signature_version=version, s3={"addressing_style": "path"}))


def _presigned(version: str, operation: str) -> tuple[str, str, dict[str, str]]:
    url = _client(version).generate_presigned_url(
        operation, Params={"Bucket": "nitronb", "Key": "input/data.enc"}, ExpiresIn=3600)
    parts = urlsplit(url)
    return parts.path, parts.query, {}


def _header_signed(version: str) -> tuple[str, str, dict[str, str]]:
    from botocore.auth import HmacV1Auth, S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("PUT", f"{ENDPOINT}/nitronb/input/data.enc?x-id=PutObject", data=BODY,
                         headers={"Content-Type": "application/octet-stream"})
    credentials = Credentials(ACCESS, SECRET)
    (S3SigV4Auth(credentials, "s3", "us-east-1") if version == "s3v4"
     else HmacV1Auth(credentials)).add_auth(request)
    parts = urlsplit(request.url)
    return parts.path, parts.query, {k.lower(): v for k, v in request.headers.items()}


BASES = [_presigned("s3v4", "get_object"), _presigned("s3v4", "put_object"),
         _presigned("s3", "get_object"), _header_signed("s3v4"), _header_signed("s3")]
PARAMS = ["X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
          "X-Amz-SignedHeaders", "X-Amz-Signature", "AWSAccessKeyId", "Signature", "Expires",
          "x-id", "uploadId", "partNumber", "delete"]
HEADERS = ["authorization", "x-amz-date", "date", "host", "x-amz-content-sha256", "content-md5",
           "x-amz-checksum-crc32", "x-amz-checksum-sha256", "x-amz-meta-note", "content-length",
           "content-type", "transfer-encoding", "x-amz-decoded-content-length"]

#: what a WSGI server hands over: str holding latin-1 code points (PEP 3333)
wire_text = st.text(st.characters(max_codepoint=255), max_size=80)
any_text = st.text(max_size=80)
value = st.one_of(wire_text.map(lambda t: t.replace("&", "").replace("#", "")),
                  any_text.map(lambda t: quote(t, safe="")),
                  st.binary(max_size=40).map(lambda b: quote(b, safe="")),
                  st.sampled_from(["", "%", "%G0", "%C3", "AWS4-HMAC-SHA256", "s3", "0", "-1",
                                   "604801", "99999999999999999999", "20261301T250000Z",
                                   f"{ACCESS}/20261201/eu-west-1/s3/aws4_request",
                                   f"{ACCESS}/x/us-east-1/s3/aws4_request", "host;x-amz-date"]))


def _auth_variant(text: str, draw) -> str:
    """An Authorization header with one of its fields or separators changed."""
    choice = draw(st.integers(0, 4))
    if choice == 0:
        return draw(wire_text)
    if 1 <= choice <= 3:
        field = ("Signature", "Credential", "SignedHeaders")[choice - 1]
        new = draw(wire_text)
        return re.sub(rf"{field}=[^,]*", lambda _: f"{field}={new}", text)
    return text.replace(",", draw(st.sampled_from(["", ",,", ", ", ";", "=", "\t"])))


@st.composite
def mutated_requests(draw) -> tuple[str, str, str, dict[str, str], bytes]:
    """(method, path, raw query, headers, body): a signed request with a few things changed."""
    data = type("Draw", (), {"draw": staticmethod(draw)})
    path, query, headers = data.draw(st.sampled_from(BASES))
    headers = dict(headers)
    method = data.draw(st.sampled_from(["GET", "PUT", "POST", "HEAD", "DELETE", "OPTIONS",
                                        "PATCH", "get"]))
    pairs = [part.partition("=")[::2] for part in query.split("&") if part]
    for _ in range(data.draw(st.integers(1, 3))):
        op = data.draw(st.sampled_from([0, 0, 0, 1, 2, 3, 4, 4, 5]))
        if op == 0 and pairs:
            index = data.draw(st.integers(0, len(pairs) - 1))
            pairs[index] = (pairs[index][0], data.draw(value))
        elif op == 1 and pairs:
            del pairs[data.draw(st.integers(0, len(pairs) - 1))]
        elif op == 2:
            pairs.append((data.draw(st.sampled_from(PARAMS) | wire_text), data.draw(value)))
        elif op == 3 and pairs:
            pairs.append(pairs[data.draw(st.integers(0, len(pairs) - 1))])
        elif op == 4:
            name = data.draw(st.sampled_from(HEADERS))
            if name == "authorization" and name in headers:
                headers[name] = _auth_variant(headers[name], draw)
            else:
                headers[name] = data.draw(wire_text | value)
        else:
            path = data.draw(st.sampled_from([path, "/nitronb/" + data.draw(value),
                                              "/" + data.draw(wire_text), "http://h" + path,
                                              "/nitronb/%FF", "//", "/moto-api/"]))
    raw_query = "&".join(f"{k}={v}" if v or data.draw(st.booleans()) else k for k, v in pairs)
    body = data.draw(st.sampled_from([BODY, b"", BODY.upper()]) | st.binary(max_size=64))
    return method, path, raw_query, headers, body


def _environ(method: str, path: str, query: str, headers: dict[str, str], body: bytes,
             raw_uri: bool) -> dict:
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "9000", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
               "CONTENT_LENGTH": headers.pop("content-length", str(len(body)))}
    if "content-type" in headers:
        environ["CONTENT_TYPE"] = headers.pop("content-type")
    if raw_uri:
        environ["REQUEST_URI"] = path + ("?" + query if query else "")
    headers.setdefault("host", "127.0.0.1:9000")
    for name, text in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = text
    return environ


def _downstream(environ, start_response):
    stream = environ["wsgi.input"]
    while stream.read(1 << 16):
        pass
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


def _answer(environ: dict) -> tuple[int, bytes]:
    gate = S3Gate(_downstream, SignatureChecker({ACCESS: SECRET}, clock=lambda: SIGNED_AT + 5))
    seen: dict[str, str] = {}

    def start_response(status, headers, exc_info=None):
        seen["status"] = status
        return lambda data: None

    body = b"".join(gate(environ, start_response))
    return int(seen["status"].split()[0]), body


def _assert_s3_answer(environ: dict) -> None:
    method = environ["REQUEST_METHOD"]
    status, body = _answer(environ)
    assert status < 500, (status, body[:300])
    if status >= 400 and method != "HEAD":
        assert re.search(rb"<Code>[A-Za-z0-9]+</Code>", body), body[:300]


@_scaled(1)
@given(mutated_requests(), st.booleans())
@example(("GET", BASES[0][0], BASES[0][1], {"host": "["}, BODY), False)  # once a ValueError
def test_the_gate_answers_mutated_signed_requests_with_s3_errors(request, raw_uri):
    _assert_s3_answer(_environ(*request[:3], dict(request[3]), request[4], raw_uri))


@st.composite
def one_field_changed(draw) -> tuple[str, str, str, dict[str, str], bytes]:
    """A signed request with exactly one query parameter or header value replaced."""
    path, query, headers = draw(st.sampled_from(BASES))
    headers = dict(headers)
    pairs = [part.partition("=")[::2] for part in query.split("&") if part]
    fields = [("query", i) for i in range(len(pairs))] + [("header", h) for h in headers]
    where, which = draw(st.sampled_from(fields))
    new = draw(value | wire_text | any_text.map(lambda t: t.encode().decode("latin-1")))
    if where == "query":
        pairs[which] = (pairs[which][0], new)
    else:
        headers[which] = (_auth_variant(headers[which], draw) if which == "authorization"
                          and draw(st.booleans()) else new)
    method = "PUT" if headers.get("authorization") or "PutObject" in query else "GET"
    return method, path, "&".join(f"{k}={v}" for k, v in pairs), headers, BODY


@_scaled(1)
@given(one_field_changed(), st.booleans())
@example(("GET", "/nitronb/input/data.enc",  # a non-ASCII signature once raised a TypeError
          f"AWSAccessKeyId={ACCESS}&Signature=%C3%A9&Expires=4102444800", {}, BODY), False)
@example(("GET", "/nitronb/input/data.enc",
          f"AWSAccessKeyId={ACCESS}&Signature=\x80&Expires=4102444800", {}, BODY), False)
def test_the_gate_answers_signed_requests_with_one_field_changed(request, raw_uri):
    _assert_s3_answer(_environ(*request[:3], dict(request[3]), request[4], raw_uri))


@_scaled(0.5)
@given(st.sampled_from(["GET", "PUT", "POST", "HEAD"]), wire_text, wire_text,
       st.dictionaries(st.sampled_from(HEADERS) | wire_text.filter(bool), wire_text, max_size=6),
       st.binary(max_size=64), st.booleans())
def test_the_gate_answers_arbitrary_requests_with_s3_errors(method, path, query, headers, body,
                                                            raw_uri):
    headers = {k.lower(): v for k, v in headers.items()}
    _assert_s3_answer(_environ(method, "/" + path, query, headers, body, raw_uri))


def _presigned_method(query: str) -> str:
    return "PUT" if "PutObject" in query else "GET"


@pytest.mark.parametrize("base", [BASES[0], BASES[2]])
def test_the_unchanged_presigned_urls_pass(base):
    path, query, headers = base
    status, body = _answer(_environ(_presigned_method(query), path, query, dict(headers), BODY,
                                    True))
    assert (status, body) == (200, b"ok")


@_scaled(0.5)
@given(st.sampled_from(BASES[:3]), st.data())
@example(BASES[0], None)  # a second X-Amz-Signature appended once passed unchecked
def test_a_presigned_url_with_an_authentication_parameter_repeated_is_refused(base, data):
    path, query, headers = base
    pairs = [part.partition("=")[::2] for part in query.split("&") if part]
    auth = [k for k, _ in pairs if k.startswith("X-Amz-") or k in ("AWSAccessKeyId",
                                                                    "Signature", "Expires")]
    if data is None:
        name, new, position = "X-Amz-Signature", "abc", len(pairs)
    else:
        name = data.draw(st.sampled_from(auth))
        new = data.draw(value | st.sampled_from([v for k, v in pairs if k == name]))
        position = data.draw(st.integers(0, len(pairs)))
    pairs.insert(position, (name, new))
    raw_query = "&".join(f"{k}={v}" for k, v in pairs)
    status, body = _answer(_environ(_presigned_method(query), path, raw_query, dict(headers),
                                    BODY, True))
    assert status == 400, body[:300]
    # a query that cannot be read at all is refused as such first
    assert re.search(rb"<Code>(AuthorizationQueryParametersError|InvalidURI)</Code>", body)


def test_a_sigv4_signature_in_capitals_does_not_match():
    path, query, headers = BASES[0]
    changed = re.sub(r"X-Amz-Signature=([0-9a-f]+)", lambda m: m.group(0).upper()
                     .replace("X-AMZ-SIGNATURE", "X-Amz-Signature"), query)
    assert changed != query
    status, body = _answer(_environ(_presigned_method(query), path, changed, dict(headers), BODY,
                                    True))
    assert status == 403 and b"<Code>SignatureDoesNotMatch</Code>" in body


@_scaled(0.5)
@given(st.sampled_from(BASES[:2]), value.filter(bool))
@example(BASES[0], "-1")  # these were once told "must be less than a week"
@example(BASES[0], "abc")
def test_an_expiry_that_is_not_1_to_604800_seconds_is_refused_saying_so(base, new):
    path, query, headers = base
    with contextlib.suppress(UnicodeDecodeError):
        decoded = unquote(new, errors="strict")
        if re.fullmatch(r"[0-9]{1,6}", decoded) and 0 < int(decoded) <= 604800:
            new = new + "x"  # a valid expiry: make it invalid
    changed = re.sub(r"X-Amz-Expires=[^&]*", lambda _: f"X-Amz-Expires={new}", query)
    status, body = _answer(_environ(_presigned_method(query), path, changed, dict(headers), BODY,
                                    True))
    assert status == 400, body[:300]
    if b"<Code>AuthorizationQueryParametersError</Code>" in body:
        assert b"from 1 to 604800" in body
    else:  # the query itself cannot be read
        assert b"<Code>InvalidURI</Code>" in body


# --- over real HTTP, against the local S3 endpoint ------------------------------------------


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A running local S3 endpoint alone in its own workspace: (host, port, credentials)."""
    from nitronb.local import stack as local
    from nitronb.local.s3gate import load_credentials

    ws = tmp_path_factory.mktemp("fuzz-gate") / "ws"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "SERVICES", {"s3": local.SERVICES["s3"]})
        patch.setenv("NITRONB_WORKSPACE", str(ws))
        local.up(ws)
        try:
            parts = urlsplit(local.url("s3", ws))
            yield parts.hostname, parts.port, load_credentials(ws)
        finally:
            local.down(ws)


def _http_status(host: str, port: int, head: bytes, body: bytes = b"") -> int:
    with socket.create_connection((host, port), timeout=30) as sock:
        sock.sendall(head + body)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    assert match, answer[:200]
    return int(match.group(1))


def _local_url(credentials, key: str, method: str, version: str, host: str, port: int) -> str:
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=f"http://{host}:{port}",
                          aws_access_key_id=credentials["access_key_id"],
                          aws_secret_access_key=credentials["secret_access_key"],
                          region_name=credentials["region"],
                          config=Config(signature_version=version,
                                        s3={"addressing_style": "path"}))
    return client.generate_presigned_url("get_object" if method == "GET" else "put_object",
                                         Params={"Bucket": "nitronb", "Key": key},
                                         ExpiresIn=600)


target_bytes = st.binary(max_size=60).map(
    lambda b: bytes(c for c in b if c > 0x20 and c not in (0x7F, 0x23)))


@_scaled(0.3)
@given(st.sampled_from([b"GET", b"PUT", b"HEAD", b"POST"]), target_bytes, target_bytes,
       st.lists(st.tuples(st.sampled_from(HEADERS), wire_text), max_size=4))
def test_the_endpoint_answers_raw_requests_below_500(endpoint, method, path, query, headers):
    host, port, _ = endpoint
    lines = [method + b" /" + path + (b"?" + query if query else b"") + b" HTTP/1.1",
             f"Host: {host}:{port}".encode()]
    for name, text in headers:
        if name not in ("host", "content-length", "transfer-encoding"):
            text = text.replace("\r", "").replace("\n", "")
            lines.append(name.encode() + b": " + text.encode("latin-1"))
    lines += [b"Content-Length: 0", b"Connection: close", b"", b""]
    assert _http_status(host, port, b"\r\n".join(lines)) < 500


@_scaled(0.3)
@given(st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40),
       st.sampled_from(["GET", "PUT"]), st.sampled_from(["s3v4", "s3"]),
       st.sampled_from(["", "X-Amz-Signature", "X-Amz-Date", "Signature", "Expires"]), value)
def test_the_endpoint_answers_presigned_urls_for_any_key_below_500(endpoint, key, method,
                                                                   version, param, new):
    host, port, credentials = endpoint
    url = _local_url(credentials, "fuzz/" + key, method, version, host, port)
    if param and f"{param}=" in url:
        url = re.sub(rf"([?&]){param}=[^&]*", lambda m: f"{m.group(1)}{param}={new}", url)
    parts = urlsplit(url)
    target = (parts.path + "?" + parts.query).encode("latin-1", "replace")
    body = b"payload" if method == "PUT" else b""
    head = b"\r\n".join([method.encode() + b" " + target + b" HTTP/1.1",
                          f"Host: {host}:{port}".encode(),
                          f"Content-Length: {len(body)}".encode(), b"Connection: close",
                          b"", b""])
    assert _http_status(host, port, head, body) < 500

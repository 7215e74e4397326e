"""The signature gate: what S3 accepts passes to the store; what S3 refuses is refused the same way.

These drive the gate as a WSGI application (no network) with URLs and headers signed by boto3.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest

from nitronb.local.s3digest import CHECKSUMS
from nitronb.local.s3gate import HEALTH_PATH, S3Gate, SignatureChecker
from nitronb.local.s3store import S3Store

ACCESS = "AKIATESTTESTTESTTEST"
SECRET = "local-secret-0123456789abcdefghijklmnop"
ENDPOINT = "http://127.0.0.1:9000"


def _store(environ, start_response):
    body = b"stored:" + environ["REQUEST_METHOD"].encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def _client(secret: str = SECRET, *, version: str = "s3v4"):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS,
                        aws_secret_access_key=secret, region_name="us-east-1",
                        config=Config(signature_version=version, s3={"addressing_style": "path"}))


def _gate(clock=time.time):
    from werkzeug.test import Client

    return Client(S3Gate(_store, SignatureChecker({ACCESS: SECRET}, clock=clock)))


def _presign(method: str = "GET", key: str = "input/data.enc", expires: int = 60,
             version: str = "s3v4", secret: str = SECRET) -> str:
    operation = "get_object" if method == "GET" else "put_object"
    return _client(secret, version=version).generate_presigned_url(
        operation, Params={"Bucket": "nitronb", "Key": key}, ExpiresIn=expires)


def _send(url: str, method: str = "GET", clock=time.time, data: bytes | None = None):
    parts = urlsplit(url)
    return _gate(clock).open(f"{parts.path}?{parts.query}", method=method, data=data,
                             base_url=f"{parts.scheme}://{parts.netloc}")


def _code(response) -> str:
    body = response.data if hasattr(response, "data") else response.content
    match = re.search(rb"<Code>(.*?)</Code>", body)
    return match.group(1).decode() if match else ""


FORMS = ["s3v4", "s3"]


@pytest.mark.parametrize("version", FORMS)
def test_a_valid_presigned_get_and_put_reach_the_store(version):
    get = _send(_presign("GET", version=version))
    assert (get.status_code, get.data) == (200, b"stored:GET")
    put = _send(_presign("PUT", version=version), "PUT", data=b"x" * 1000)
    assert (put.status_code, put.data) == (200, b"stored:PUT")


@pytest.mark.parametrize("version", FORMS)
def test_an_expired_url_is_access_denied(version):
    url = _presign(expires=60, version=version)
    response = _send(url, clock=lambda: time.time() + 61)
    assert response.status_code == 403
    assert _code(response) == "AccessDenied"
    assert b"<Message>Request has expired</Message>" in response.data
    assert b"stored" not in response.data


def _edit_expiry(url: str) -> str:
    if "X-Amz-Expires=60" in url:
        return url.replace("X-Amz-Expires=60", "X-Amz-Expires=600")
    expires = re.search(r"Expires=(\d+)", url).group(1)
    return url.replace(f"Expires={expires}", f"Expires={int(expires) + 600}")


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("tamper", ["edited query", "wrong secret", "other object",
                                    "other method"])
def test_a_signature_that_does_not_match_is_refused(version, tamper):
    method = "GET"
    if tamper == "edited query":
        url = _edit_expiry(_presign(version=version))
    elif tamper == "wrong secret":
        url = _presign(version=version, secret="not-the-secret")
    elif tamper == "other object":
        url = _presign(version=version).replace("data.enc", "other.enc")
    else:
        url, method = _presign("GET", version=version), "PUT"
    response = _send(url, method, data=b"payload" if method == "PUT" else None)
    assert response.status_code == 403
    assert _code(response) == "SignatureDoesNotMatch"


def test_unknown_access_keys_and_anonymous_requests_are_refused():
    url = _presign().replace(ACCESS, "AKIAUNKNOWNUNKNOWN00")
    assert _code(_send(url)) == "InvalidAccessKeyId"
    anonymous = _gate().get("/nitronb/input/data.enc")
    assert (anonymous.status_code, _code(anonymous)) == (403, "AccessDenied")


def test_a_week_is_the_longest_sigv4_expiry():
    url = _presign().replace("X-Amz-Expires=60", "X-Amz-Expires=604801")
    response = _send(url)
    assert (response.status_code, _code(response)) == (400, "AuthorizationQueryParametersError")


@pytest.mark.parametrize("value", ["-1", "0", "abc", "+60", " 60", "60.0", "١٢", "604801",
                                   "9" * 30])
def test_an_expiry_that_is_no_whole_number_of_seconds_up_to_a_week_is_refused(value):
    response = _send(_presign().replace("X-Amz-Expires=60", f"X-Amz-Expires={value}"))
    assert (response.status_code, _code(response)) == (400, "AuthorizationQueryParametersError")
    message = re.search(rb"<Message>(.*?)</Message>", response.data).group(1).decode()
    assert "from 1 to 604800" in message and "less than a week" not in message
    assert "stored" not in response.text


@pytest.mark.parametrize("version", FORMS)
def test_an_upper_cased_signature_does_not_match(version):
    url = _presign(version=version)
    name = "X-Amz-Signature=" if version == "s3v4" else "Signature="
    start = url.index(name) + len(name)
    end = url.find("&", start) if url.find("&", start) != -1 else len(url)
    changed = url[:start] + url[start:end].upper() + url[end:]
    assert changed != url
    response = _send(changed)
    assert (response.status_code, _code(response)) == (403, "SignatureDoesNotMatch")


def test_an_upper_cased_header_signature_does_not_match():
    request = _header_signed()
    auth = request.headers["Authorization"]
    at = auth.rindex("Signature=") + len("Signature=")
    request.headers["Authorization"] = auth[:at] + auth[at:].upper()
    response = _send_signed(request)
    assert (response.status_code, _code(response)) == (403, "SignatureDoesNotMatch")


@pytest.mark.parametrize("version,extra", [
    ("s3v4", "X-Amz-Signature=abc"), ("s3v4", "X-Amz-Expires=600"), ("s3v4", "X-Amz-Date=x"),
    ("s3", "Signature=abc"), ("s3", "Expires=1"), ("s3", "AWSAccessKeyId=x")])
def test_a_repeated_authentication_parameter_is_refused(version, extra):
    response = _send(f"{_presign(version=version)}&{extra}")
    assert (response.status_code, _code(response)) == (400, "AuthorizationQueryParametersError")
    assert extra.split("=")[0] in response.text and "more than once" in response.text
    assert "stored" not in response.text


def _header_signed(secret: str = SECRET, when: float | None = None):
    """A request signed in its Authorization header, as boto3 sends it."""
    import datetime
    from unittest import mock

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    body = b"object bytes"
    request = AWSRequest("PUT", f"{ENDPOINT}/nitronb/input/data.enc?x-id=PutObject", data=body,
                         headers={"Content-Type": "application/octet-stream"})
    moment = datetime.datetime.fromtimestamp(when or time.time(), datetime.timezone.utc)
    with mock.patch("botocore.auth.datetime") as fake:
        fake.datetime.now.return_value = moment
        fake.datetime.utcnow.return_value = moment.replace(tzinfo=None)
        S3SigV4Auth(Credentials(ACCESS, secret), "s3", "us-east-1").add_auth(request)
    return request


def _send_signed(request, clock=time.time):
    parts = urlsplit(request.url)
    return _gate(clock).open(f"{parts.path}?{parts.query}", method=request.method,
                             data=request.body, headers=dict(request.headers.items()),
                             base_url=f"{parts.scheme}://{parts.netloc}")


def test_header_signed_requests_are_verified():
    assert _send_signed(_header_signed()).data == b"stored:PUT"
    assert _code(_send_signed(_header_signed(secret="wrong"))) == "SignatureDoesNotMatch"
    skewed = _send_signed(_header_signed(), clock=lambda: time.time() + 3600)
    assert _code(skewed) == "RequestTimeTooSkewed"


def test_an_amz_header_added_after_signing_is_refused():
    request = _header_signed()
    request.headers["X-Amz-Meta-Note"] = "added after signing"
    response = _send_signed(request)
    assert (response.status_code, _code(response)) == (403, "AccessDenied")
    assert b"<HeadersNotSigned>x-amz-meta-note</HeadersNotSigned>" in response.data


def test_the_health_check_needs_no_signature():
    response = _gate().get(HEALTH_PATH)
    assert response.status_code == 200
    assert response.json == {"status": "ok"}


def test_legacy_header_signed_requests_are_verified():
    from botocore.auth import HmacV1Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    def signed(secret: str):
        request = AWSRequest("GET", f"{ENDPOINT}/nitronb/input/data.enc")
        HmacV1Auth(Credentials(ACCESS, secret)).add_auth(request)
        return request

    assert _send_signed(signed(SECRET)).data == b"stored:GET"
    assert _code(_send_signed(signed("wrong"))) == "SignatureDoesNotMatch"



# --- malformed input: S3's 4xx answers, never a server error ------------------------------


def _with_signature(url: str, signature: str) -> str:
    name = "X-Amz-Signature=" if "X-Amz-Signature=" in url else "Signature="
    head, _, tail = url.partition(name)
    return head + name + signature + ("&" + tail.split("&", 1)[1] if "&" in tail else "")


@pytest.mark.parametrize("version", FORMS)
@pytest.mark.parametrize("signature", ["%C3%A9" * 32, "abc%E2%82%AC", "%FF%FE"])
def test_a_presigned_signature_with_non_ascii_characters_does_not_match(version, signature):
    response = _send(_with_signature(_presign(version=version), signature))
    assert response.status_code in (400, 403)
    expected = "InvalidURI" if signature == "%FF%FE" else "SignatureDoesNotMatch"
    assert _code(response) == expected


def test_a_header_signature_with_non_ascii_characters_does_not_match():
    from botocore.auth import HmacV1Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = _header_signed()
    auth = request.headers["Authorization"]
    request.headers["Authorization"] = auth[:auth.rindex("Signature=") + 10] + "é" * 64
    v2 = AWSRequest("GET", f"{ENDPOINT}/nitronb/input/data.enc")
    HmacV1Auth(Credentials(ACCESS, SECRET)).add_auth(v2)
    v2.headers["Authorization"] = v2.headers["Authorization"][:-4] + "ü€x="
    for tampered in (request, v2):
        response = _send_signed(tampered)
        assert (response.status_code, _code(response)) == (403, "SignatureDoesNotMatch")


def _signed_for(region: str, form: str):
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=ENDPOINT, aws_access_key_id=ACCESS,
                          aws_secret_access_key=SECRET, region_name=region,
                          config=Config(signature_version="s3v4",
                                        s3={"addressing_style": "path"}))
    url = client.generate_presigned_url("get_object", ExpiresIn=60,
                                        Params={"Bucket": "nitronb", "Key": "input/data.enc"})
    if form == "query":
        return _send(url)
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    request = AWSRequest("GET", f"{ENDPOINT}/nitronb/input/data.enc")
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", region).add_auth(request)
    return _send_signed(request)


@pytest.mark.parametrize("form,code", [("query", "AuthorizationQueryParametersError"),
                                       ("header", "AuthorizationHeaderMalformed")])
def test_a_request_signed_for_another_region_names_the_expected_one(form, code):
    response = _signed_for("eu-west-1", form)
    assert (response.status_code, _code(response)) == (400, code)
    assert b"the region 'eu-west-1' is wrong; expecting 'us-east-1'" in response.data
    assert b"<Region>us-east-1</Region>" in response.data
    assert _signed_for("us-east-1", form).data == b"stored:GET"


def test_the_local_credentials_name_the_endpoints_region_whatever_is_stored(tmp_path):
    import json

    from nitronb.local.s3gate import LOCAL_REGION, credentials_path, load_credentials

    created = load_credentials(tmp_path, create=True)
    stored = json.loads(credentials_path(tmp_path).read_text(encoding="utf-8"))
    credentials_path(tmp_path).write_text(json.dumps({**stored, "region": "eu-west-1"}),
                                          encoding="utf-8")
    assert created["region"] == load_credentials(tmp_path)["region"] == LOCAL_REGION
    assert SignatureChecker({}).region == LOCAL_REGION


@pytest.mark.parametrize("host", ["[", "127.0.0.1:port", "127.0.0.1:99999", "user@127.0.0.1",
                                  "127.0.0.1/x"])
def test_a_host_header_that_is_no_host_and_port_is_an_invalid_argument(host):
    url = _presign()
    parts = urlsplit(url)
    response = _gate().open(f"{parts.path}?{parts.query}", headers={"Host": host},
                            base_url=f"{parts.scheme}://{parts.netloc}")
    assert (response.status_code, _code(response)) == (400, "InvalidArgument")


def _signed_at(url: str) -> float:
    import calendar

    stamp = re.search(r"X-Amz-Date=(\d{8}T\d{6}Z)", url).group(1)
    return calendar.timegm(time.strptime(stamp, "%Y%m%dT%H%M%SZ"))


def test_a_presigned_url_dated_more_than_15_minutes_ahead_is_not_valid_yet():
    url = _presign(expires=3600)
    at = _signed_at(url)
    assert _send(url, clock=lambda: at - 15 * 60).data == b"stored:GET"
    early = _send(url, clock=lambda: at - 15 * 60 - 1)
    assert (early.status_code, _code(early)) == (403, "AccessDenied")
    assert b"<Message>Request is not valid yet</Message>" in early.data


def test_a_header_signed_request_more_than_15_minutes_ahead_is_too_skewed():
    request = _header_signed()
    at = _signed_at("X-Amz-Date=" + request.headers["X-Amz-Date"])
    assert _send_signed(request, clock=lambda: at - 15 * 60).data == b"stored:PUT"
    early = _send_signed(request, clock=lambda: at - 15 * 60 - 1)
    assert (early.status_code, _code(early)) == (403, "RequestTimeTooSkewed")


@pytest.mark.parametrize("where", ["path", "query"])
def test_a_path_or_query_that_is_not_utf8_is_an_invalid_uri(where):
    url = _presign()
    url = url.replace("input/", "input/%FF") if where == "path" else url + "&x=%C3"
    response = _send(url)
    assert (response.status_code, _code(response)) == (400, "InvalidURI")


@pytest.mark.parametrize("param,value", [
    ("X-Amz-Date", "2026-01-01T00:00:00Z"), ("X-Amz-Date", "٢٠٢٦٠١٠١T000000Z"),
    ("X-Amz-Credential", "%00"), ("X-Amz-Expires", "1" * 5000), ("X-Amz-SignedHeaders", ";;"),
    ("X-Amz-Algorithm", "é")])
def test_malformed_sigv4_query_parameters_are_client_errors(param, value):
    url = re.sub(rf"{param}=[^&]*", f"{param}={value}", _presign())
    response = _send(url)
    assert 400 <= response.status_code < 500
    assert _code(response)

# --- write-through to the store -------------------------------------------------------------


class _RecordingStore:
    """Stands in for S3Store: records what the gate asks it to write."""

    def __init__(self, fail: bool = False):
        import contextlib

        self.calls: list[tuple] = []
        self.fail = fail
        self.changing = contextlib.nullcontext

    record = S3Store.record  # the real decision of what a request changed

    def known_buckets(self) -> set[str]:
        return {"nitronb"}

    def sync_object(self, bucket: str, key: str) -> bool:
        if self.fail:
            raise OSError(28, "No space left on device")
        self.calls.append(("object", bucket, key))
        return True

    def sync_bucket(self, bucket: str) -> None:
        self.calls.append(("bucket", bucket))

    def sync_all(self) -> None:
        self.calls.append(("all",))

    def check_room(self, *request) -> None:
        pass

    def undo(self, bucket: str, key: str) -> None:
        self.calls.append(("undo", bucket, key))


def _stored_gate(store):
    from werkzeug.test import Client

    return Client(S3Gate(_store, SignatureChecker({ACCESS: SECRET}), store=store))


def _signed(method: str, path: str, query: str = "", body: bytes = b""):
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{ENDPOINT}{path}" + (f"?{query}" if query else "")
    request = AWSRequest(method, url, data=body)
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    parts = urlsplit(request.url)
    return dict(path=f"{parts.path}?{parts.query}", method=method, data=request.body,
                headers=dict(request.headers.items()), base_url=f"{parts.scheme}://{parts.netloc}")


@pytest.mark.parametrize("method,path,query,expected", [
    ("PUT", "/nitronb/input/d%C3%A9j%C3%A0%20vu%2Bx.enc", "",
     ("object", "nitronb", "input/déjà vu+x.enc")),
    ("DELETE", "/nitronb/input/a", "", ("object", "nitronb", "input/a")),
    ("POST", "/nitronb/big.bin", "uploadId=abc", ("object", "nitronb", "big.bin")),
    ("POST", "/nitronb", "delete=", ("bucket", "nitronb")),
    ("PUT", "/other-bucket", "", ("all",)),
])
def test_a_successful_change_is_written_before_it_is_answered(method, path, query, expected):
    store = _RecordingStore()
    response = _stored_gate(store).open(**_signed(method, path, query, b"x"))
    assert response.status_code == 200
    assert store.calls == [expected]


@pytest.mark.parametrize("method,query", [("PUT", "uploadId=abc&partNumber=1"),
                                          ("POST", "uploads="), ("DELETE", "uploadId=abc"),
                                          ("GET", ""), ("HEAD", "")])
def test_reads_and_unfinished_uploads_write_nothing(method, query):
    store = _RecordingStore()
    _stored_gate(store).open(**_signed(method, "/nitronb/big.bin", query))
    assert store.calls == []


def test_a_change_that_cannot_be_saved_is_not_acknowledged_and_is_taken_back():
    store = _RecordingStore(fail=True)
    response = _stored_gate(store).open(**_signed("PUT", "/nitronb/input/a", body=b"payload"))
    assert response.status_code == 507
    assert _code(response) == "InsufficientStorage"
    assert b"disk is full" in response.data
    assert b"stored:" not in response.data
    assert store.calls == [("undo", "nitronb", "input/a")]


# --- the body's integrity headers -----------------------------------------------------------


def _b64(raw: bytes) -> str:
    import base64

    return base64.b64encode(raw).decode()


def _md5(body: bytes) -> str:
    import hashlib

    return _b64(hashlib.md5(body).digest())


def _crc32(body: bytes) -> str:
    import zlib

    return _b64(zlib.crc32(body).to_bytes(4, "big"))


def _crc32c(body: bytes) -> str:
    import crc32c  # the implementation the gate uses; the check value test below pins it

    return _b64(crc32c.crc32c(body).to_bytes(4, "big"))


def _crc64nvme(body: bytes) -> str:
    try:
        from awscrt import checksums
    except ImportError:
        return ""  # the tests that need it are skipped
    return _b64(checksums.crc64nvme(body).to_bytes(8, "big"))


#: CRC64NVME is checked only where awscrt is installed (boto3[crt])
_needs_crt = pytest.mark.skipif("crc64nvme" not in CHECKSUMS,
                                reason="awscrt (boto3[crt]) is not installed")


class _ReadingStore:
    """Stands in for moto: reads the whole body as werkzeug hands it over, then keeps it."""

    def __init__(self):
        self.kept: list[bytes] = []

    def __call__(self, environ, start_response):
        from werkzeug.wrappers import Request

        self.kept.append(Request(environ).get_data())
        start_response("200 OK", [("Content-Length", "2")])
        return [b"ok"]


def _put(headers: dict[str, str], body: bytes, sent: bytes | None = None):
    """A header-signed PUT of ``body`` with extra signed headers; ``sent`` goes instead of it."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from werkzeug.test import Client

    request = AWSRequest("PUT", f"{ENDPOINT}/nitronb/input/data.enc", data=body, headers=headers)
    S3SigV4Auth(Credentials(ACCESS, SECRET), "s3", "us-east-1").add_auth(request)
    store = _ReadingStore()
    response = Client(S3Gate(store, SignatureChecker({ACCESS: SECRET}))).open(
        "/nitronb/input/data.enc", method="PUT", data=body if sent is None else sent,
        headers=dict(request.headers.items()), base_url=ENDPOINT)
    return response, store.kept


BODY = b"object bytes " * 1000


@pytest.mark.parametrize("headers", [
    {}, {"Content-MD5": _md5(BODY)}, {"x-amz-checksum-crc32": _crc32(BODY)},
    {"x-amz-checksum-sha256": _b64(__import__("hashlib").sha256(BODY).digest())},
    {"x-amz-checksum-sha1": _b64(__import__("hashlib").sha1(BODY).digest())},
    {"x-amz-checksum-crc32c": _crc32c(BODY)},
    pytest.param({"x-amz-checksum-crc64nvme": _crc64nvme(BODY)}, marks=_needs_crt),
])
def test_a_body_that_matches_its_headers_is_kept_whole(headers):
    response, kept = _put(headers, BODY)
    assert (response.status_code, kept) == (200, [BODY])


@pytest.mark.parametrize("headers,message", [
    ({"Content-MD5": _md5(b"other")},
     b"The Content-MD5 you specified did not match what was received."),
    ({"x-amz-checksum-crc32": _crc32(b"other")},
     b"The CRC32 you specified did not match the calculated checksum."),
    ({"x-amz-checksum-sha256": _b64(bytes(32))},
     b"The SHA256 you specified did not match the calculated checksum."),
    ({"x-amz-checksum-sha1": _b64(bytes(20))},
     b"The SHA1 you specified did not match the calculated checksum."),
    ({"x-amz-checksum-crc32c": _crc32c(b"other")},
     b"The CRC32C you specified did not match the calculated checksum."),
    pytest.param({"x-amz-checksum-crc64nvme": _crc64nvme(b"other")},
                 b"The CRC64NVME you specified did not match the calculated checksum.",
                 marks=_needs_crt),
])
def test_a_body_that_does_not_match_is_bad_digest_and_not_kept(headers, message):
    response, kept = _put(headers, BODY)
    assert (response.status_code, _code(response)) == (400, "BadDigest")
    assert message in response.data
    assert kept == []


def test_an_empty_body_is_checked_too():
    assert _put({"Content-MD5": _md5(b"")}, b"")[0].status_code == 200
    response, kept = _put({"Content-MD5": _md5(b"x")}, b"")
    assert (response.status_code, _code(response), kept) == (400, "BadDigest", [])


def test_a_body_other_than_the_signed_sha256_is_refused():
    altered = BODY.replace(b"object", b"OBJECT")  # same length, same signature, other bytes
    response, kept = _put({}, BODY, sent=altered)
    assert (response.status_code, _code(response)) == (400, "XAmzContentSHA256Mismatch")
    assert kept == []


@pytest.mark.parametrize("headers,code", [({"Content-MD5": "not base64!"}, "InvalidDigest"),
                                          ({"Content-MD5": _b64(b"short")}, "InvalidDigest"),
                                          ({"x-amz-checksum-crc32": "AAAA"}, "InvalidRequest"),
                                          pytest.param({"x-amz-checksum-crc64nvme":
                                                        _b64(bytes(4))}, "InvalidRequest",
                                                       marks=_needs_crt)])
def test_a_malformed_digest_is_refused_before_the_body_is_read(headers, code):
    response, kept = _put(headers, BODY)
    assert (response.status_code, _code(response), kept) == (400, code, [])


@pytest.mark.parametrize("algorithm,check", [
    ("crc32", "cbf43926"), ("crc32c", "e3069283"),
    pytest.param("crc64nvme", "ae8b14860a799888", marks=_needs_crt),
    ("sha1", "f7c3bc1d808e04732adf679965ccc34ca7ae3441"), ("md5", "25f9e794323b453885f5181f1b624d0b"),
    ("sha256", "15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225"),
])
def test_each_checksum_gives_its_published_check_value(algorithm, check):
    from nitronb.local.s3digest import new_checksum

    digest = new_checksum(algorithm.upper())  # the check value: the digest of b"123456789"
    for piece in (b"1234", memoryview(b"5678"), bytearray(b"9")):
        digest.update(piece)
    assert digest.digest().hex() == check


@pytest.mark.skipif("crc64nvme" in CHECKSUMS, reason="awscrt is installed")
def test_without_awscrt_a_crc64nvme_header_is_kept_as_given():
    response, kept = _put({"x-amz-checksum-crc64nvme": _b64(bytes(8))}, BODY)
    assert (response.status_code, kept) == (200, [BODY])


def test_a_chunked_body_is_checked_at_its_end():
    import io

    from nitronb.local.s3digest import BodyMismatch, Rejection, VerifyingInput, _Expectation

    def reader(crc: str) -> VerifyingInput:
        import base64

        expected = _Expectation("crc32", base64.b64decode(crc), Rejection(400, "BadDigest", ""))
        return VerifyingInput(io.BytesIO(BODY), [expected], None)

    good = reader(_crc32(BODY))
    assert b"".join(iter(lambda: good.read(4096), b"")) == BODY and good.rejection is None
    bad = reader(_crc32(b"other"))
    with pytest.raises(BodyMismatch):
        while bad.read(4096):
            pass
    with pytest.raises(BodyMismatch):  # and stays refused
        bad.read(1)


# --- the real endpoint: a body that does not match is refused and nothing is kept -----------


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory):
    """A running local S3 endpoint in its own workspace: (workspace, boto3 client)."""
    from nitronb.local import stack as local
    from nitronb.s3 import client as storage

    ws = tmp_path_factory.mktemp("gate") / "ws"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(local, "SERVICES", {"s3": local.SERVICES["s3"]})
        patch.setenv("NITRONB_WORKSPACE", str(ws))
        local.up(ws)
        try:
            yield ws, storage.client_for(workspace=ws)
        finally:
            local.down(ws)


def _on_disk(ws) -> set[str]:
    from nitronb.local.s3store import data_dir

    return {str(p.relative_to(data_dir(ws))) for p in data_dir(ws).rglob("*") if p.is_file()}


def _absent(client, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket="nitronb", Key=key)
    except ClientError as error:
        return error.response["Error"]["Code"] in ("404", "NoSuchKey")
    return False


def _error_code(call) -> str:
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError) as caught:
        call()
    return caught.value.response["Error"]["Code"]


def test_boto3_puts_with_a_wrong_checksum_are_bad_digest(endpoint):
    ws, client = endpoint
    before = _on_disk(ws)
    put = dict(Bucket="nitronb", Key="gate/boto3.bin", Body=BODY)
    assert _error_code(lambda: client.put_object(**put, ChecksumCRC32=_crc32(b"x"))) == \
        "BadDigest"
    assert _error_code(lambda: client.put_object(**put, ContentMD5=_md5(b"x"))) == "BadDigest"
    assert _absent(client, "gate/boto3.bin") and _on_disk(ws) == before
    client.put_object(**put, ChecksumCRC32=_crc32(BODY), ContentMD5=_md5(BODY))
    assert client.get_object(Bucket="nitronb", Key="gate/boto3.bin")["Body"].read() == BODY
    assert _on_disk(ws) != before


def test_a_part_with_a_wrong_checksum_is_bad_digest(endpoint):
    _, client = endpoint
    upload = client.create_multipart_upload(Bucket="nitronb", Key="gate/parts.bin",
                                            ChecksumAlgorithm="CRC32")["UploadId"]
    part = dict(Bucket="nitronb", Key="gate/parts.bin", UploadId=upload, PartNumber=1, Body=BODY)
    try:
        assert _error_code(lambda: client.upload_part(**part, ChecksumCRC32=_crc32(b"x"))) == \
            "BadDigest"
        listed = client.list_parts(Bucket="nitronb", Key="gate/parts.bin", UploadId=upload)
        assert listed.get("Parts", []) == []
        client.upload_part(**part, ChecksumCRC32=_crc32(BODY))
        listed = client.list_parts(Bucket="nitronb", Key="gate/parts.bin", UploadId=upload)
        assert [p["PartNumber"] for p in listed["Parts"]] == [1]
    finally:
        client.abort_multipart_upload(Bucket="nitronb", Key="gate/parts.bin", UploadId=upload)


def test_a_presigned_put_with_a_wrong_md5_is_bad_digest(endpoint):
    import requests

    ws, client = endpoint
    url = client.generate_presigned_url("put_object", Params={"Bucket": "nitronb",
                                                              "Key": "gate/presigned.bin"})
    before = _on_disk(ws)
    refused = requests.put(url, data=BODY, headers={"Content-MD5": _md5(b"x")}, timeout=30)
    assert (refused.status_code, _code(refused)) == (400, "BadDigest")
    assert _absent(client, "gate/presigned.bin") and _on_disk(ws) == before
    accepted = requests.put(url, data=BODY, headers={"Content-MD5": _md5(BODY)}, timeout=30)
    assert accepted.status_code == 200


def test_curl_on_a_presigned_url_gets_bad_digest(endpoint, tmp_path):
    import shutil
    import subprocess

    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    ws, client = endpoint
    url = client.generate_presigned_url("put_object", Params={"Bucket": "nitronb",
                                                              "Key": "gate/curl.bin"})
    source = tmp_path / "body.bin"
    source.write_bytes(BODY)
    before = _on_disk(ws)
    done = subprocess.run(["curl", "-sS", "-o", "-", "-w", "\n%{http_code}", "-T", str(source),
                           "-H", f"Content-MD5: {_md5(b'x')}", url],
                          capture_output=True, timeout=60, check=True)
    answer, _, status = done.stdout.rpartition(b"\n")
    assert status == b"400" and b"<Code>BadDigest</Code>" in answer
    assert _absent(client, "gate/curl.bin") and _on_disk(ws) == before


def test_a_body_other_than_its_signed_sha256_is_refused_by_the_endpoint(endpoint):
    import requests
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from nitronb.local.s3gate import load_credentials

    ws, client = endpoint
    keys = load_credentials(ws)
    request = AWSRequest("PUT", f"{client.meta.endpoint_url}/nitronb/gate/sha.bin", data=BODY)
    S3SigV4Auth(Credentials(keys["access_key_id"], keys["secret_access_key"]), "s3",
                "us-east-1").add_auth(request)
    before = _on_disk(ws)
    refused = requests.put(request.url, data=BODY.upper(), headers=dict(request.headers.items()),
                           timeout=30)
    assert (refused.status_code, _code(refused)) == (400, "XAmzContentSHA256Mismatch")
    assert _absent(client, "gate/sha.bin") and _on_disk(ws) == before


def test_the_endpoint_refuses_another_region_and_nitronbs_own_urls_work(endpoint):
    import boto3
    import requests
    from botocore.config import Config

    from nitronb.s3.presign import presign_download
    from nitronb.local.s3gate import load_credentials

    ws, client = endpoint
    client.put_object(Bucket="nitronb", Key="gate/region.bin", Body=BODY)
    keys = load_credentials(ws)
    foreign = boto3.client("s3", endpoint_url=client.meta.endpoint_url, region_name="eu-west-1",
                           aws_access_key_id=keys["access_key_id"],
                           aws_secret_access_key=keys["secret_access_key"],
                           config=Config(signature_version="s3v4",
                                         s3={"addressing_style": "path"}))
    url = foreign.generate_presigned_url("get_object", ExpiresIn=60,
                                         Params={"Bucket": "nitronb", "Key": "gate/region.bin"})
    refused = requests.get(url, timeout=30)
    assert (refused.status_code, _code(refused)) == (400, "AuthorizationQueryParametersError")
    assert "expecting 'us-east-1'" in refused.text
    own = presign_download("local", "s3://nitronb/gate/", "region.bin", 60, workspace=ws)
    assert requests.get(own.url, timeout=30).content == BODY


def _with_headers(request, **changes):
    """The header-signed ``request`` with headers replaced (None removes one)."""
    headers = dict(request.headers.items())
    for name, value in changes.items():
        name = name.replace("_", "-")
        if value is None:
            headers.pop(name, None)
        else:
            headers[name] = value
    request.headers = type(request.headers)()
    for name, value in headers.items():
        request.headers[name] = value
    return request


@pytest.mark.parametrize("change, status, code", [
    ({"Authorization": "AWS4-HMAC-SHA256 Credential=x"}, 400, "AuthorizationHeaderMalformed"),
    ({"Authorization": "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=ab"}, 400,
     "AuthorizationHeaderMalformed"),
    ({"X-Amz-Date": None}, 403, "AccessDenied"),
    ({"Authorization": "AWS AKIAUNKNOWNUNKNOWN00:c2lnbmF0dXJl"}, 403, "InvalidAccessKeyId"),
    ({"Authorization": "AWS " + ACCESS + ":c2lnbmF0dXJl"}, 403, "SignatureDoesNotMatch"),
    ({"Authorization": "Bearer x"}, 403, "AccessDenied"),
])
def test_a_header_that_does_not_authenticate_is_refused_as_s3_does(change, status, code):
    response = _send_signed(_with_headers(_header_signed(), **change))
    assert (response.status_code, _code(response)) == (status, code)
    assert response.data != b"stored:PUT"


def test_a_header_signed_request_with_an_unknown_key_names_it():
    request = _header_signed()
    auth = request.headers["Authorization"].replace(ACCESS, "AKIAUNKNOWNUNKNOWN00")
    response = _send_signed(_with_headers(request, Authorization=auth))
    assert (response.status_code, _code(response)) == (403, "InvalidAccessKeyId")
    assert b"<AWSAccessKeyId>AKIAUNKNOWNUNKNOWN00</AWSAccessKeyId>" in response.data


def test_a_header_signed_request_is_valid_for_exactly_the_allowed_skew():
    import calendar

    from nitronb.local.s3gate import MAX_CLOCK_SKEW

    request = _header_signed()
    amz_date = request.headers["X-Amz-Date"]
    signed = calendar.timegm(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    assert _send_signed(request, clock=lambda: signed + MAX_CLOCK_SKEW).data == b"stored:PUT"
    assert _send_signed(request, clock=lambda: signed - MAX_CLOCK_SKEW).data == b"stored:PUT"
    for now in (signed + MAX_CLOCK_SKEW + 1, signed - MAX_CLOCK_SKEW - 1):
        response = _send_signed(request, clock=lambda: now)
        assert (response.status_code, _code(response)) == (403, "RequestTimeTooSkewed")
        assert f"<RequestTime>{amz_date}</RequestTime>".encode() in response.data
        assert f"<ServerTime>{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))}" \
            "</ServerTime>".encode() in response.data

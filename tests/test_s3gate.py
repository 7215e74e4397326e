"""The signature gate: what S3 accepts passes to the store; what S3 refuses is refused the same way.

These drive the gate as a WSGI application (no network) with URLs and headers signed by boto3.
"""

from __future__ import annotations

import re
import time
from urllib.parse import urlsplit

import pytest

from nitronb.s3gate import HEALTH_PATH, S3Gate, SignatureChecker
from nitronb.s3store import S3Store

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
    match = re.search(rb"<Code>(.*?)</Code>", response.data)
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


def test_a_change_that_cannot_be_saved_is_not_acknowledged():
    response = _stored_gate(_RecordingStore(fail=True)).open(
        **_signed("PUT", "/nitronb/input/a", body=b"payload"))
    assert response.status_code == 500
    assert _code(response) == "InternalError"
    assert b"No space left on device" in response.data
    assert b"stored:" not in response.data

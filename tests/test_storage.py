"""Storage against the real local endpoint over HTTP: transfers, presigned URLs, errors."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from nitronb import errors
from nitronb.s3.client import S3Dir, client_for, parse_s3_dir, parse_s3_uri
from nitronb.s3.presign import (credentials_json, presign_download, presign_upload, split_url,
                                url_from_credentials)
from nitronb.s3.transfers import download_file, upload_file

KEY = "63F0" + "AB" * 28 + "D24A"
BUCKET = "s3://nitronb/"

needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


# --- paths and credentials (no store needed) ------------------------------------------------


@pytest.mark.parametrize("text, bucket, prefix", [
    ("s3://nitronb", "nitronb", ""),
    ("s3://nitronb/", "nitronb", ""),
    ("s3://nitronb/input", "nitronb", "input/"),
    ("s3://my.bucket-1/a/b/", "my.bucket-1", "a/b/"),
])
def test_s3_directories_parse(text, bucket, prefix):
    assert parse_s3_dir(text) == S3Dir(bucket, prefix)
    assert parse_s3_dir(text).uri("x.enc") == f"s3://{bucket}/{prefix}x.enc"


@pytest.mark.parametrize("text", ["nitronb/input", "s3:/nitronb", "s3://Upper/x", "s3://ab/",
                                  "s3://bad_bucket/", "https://nitronb/x"])
def test_malformed_s3_paths_are_refused(text):
    with pytest.raises(errors.BadS3PathError):
        parse_s3_dir(text)


def test_an_object_uri_must_name_an_object():
    assert parse_s3_uri("s3://nitronb/a/b.enc") == ("nitronb", "a/b.enc")
    with pytest.raises(errors.BadS3PathError):
        parse_s3_uri("s3://nitronb/a/")


def test_credentials_carry_the_query_string_in_base64_and_rebuild_the_url():
    url = "https://b.s3.amazonaws.com/in/x.enc?X-Amz-Expires=60&X-Amz-Signature=abc%2Fdef"
    location, query = split_url(url)
    assert location == "https://b.s3.amazonaws.com/in/x.enc"
    assert query == "X-Amz-Expires=60&X-Amz-Signature=abc%2Fdef"
    creds = credentials_json(url, KEY.lower())
    assert creds == {"query_string": base64.b64encode(query.encode()).decode(),
                     "encryption": {"key": KEY}}
    assert url_from_credentials(location, creds) == url
    assert url_from_credentials(location, json.dumps(creds)) == url
    with pytest.raises(errors.KeyFileError):
        credentials_json(url, "not-a-key")


# --- transfers ------------------------------------------------------------------------------


def test_an_encrypted_file_round_trips(local_stack, tmp_path):
    from nitronb import sample_path
    from nitronb.crypto import decrypt_file, encrypt_file

    encrypted = tmp_path / "conditions.csv.enc"
    encrypt_file(KEY, sample_path(), encrypted)
    uri = upload_file(encrypted, "s3://nitronb/roundtrip/")
    assert uri == "s3://nitronb/roundtrip/conditions.csv.enc"
    back = download_file(uri, tmp_path / "back.enc")
    assert back.read_bytes() == encrypted.read_bytes()
    decrypt_file(KEY, back, tmp_path / "conditions.csv")
    assert (tmp_path / "conditions.csv").read_bytes() == sample_path().read_bytes()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("parallel", [False, True])
def test_a_multipart_object_round_trips_and_is_checked(local_stack, tmp_path, parallel):
    data = os.urandom(11 * 1024 * 1024 + 12345)
    source = tmp_path / "multi.bin"
    source.write_bytes(data)
    uri = upload_file(source, "s3://nitronb/multi/obj.bin", part_size=5 * 1024 * 1024,
                      multipart_threshold=1024 * 1024)
    head = client_for().head_object(Bucket="nitronb", Key="multi/obj.bin")
    assert head["ETag"].strip('"').endswith("-3")  # stored as 3 parts
    target = download_file(uri, tmp_path / "out.bin", parallel=parallel, concurrency=3)
    assert hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(data).digest()


def _composite_crc32(data: bytes, part_size: int) -> str:
    crcs = b"".join(zlib.crc32(data[i:i + part_size]).to_bytes(4, "big")
                    for i in range(0, len(data), part_size))
    return base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()


def test_a_multipart_upload_is_stored_with_the_composite_crc32_of_its_parts(local_stack,
                                                                            tmp_path):
    data = os.urandom(12 * 1024 * 1024 + 7)
    (tmp_path / "crc.bin").write_bytes(data)
    upload_file(tmp_path / "crc.bin", "s3://nitronb/crc/obj.bin", part_size=5 * 1024 * 1024,
                multipart_threshold=1024 * 1024, concurrency=2)
    head = client_for().head_object(Bucket="nitronb", Key="crc/obj.bin", ChecksumMode="ENABLED")
    stored = head["ChecksumCRC32"].partition("-")
    assert stored[0] == _composite_crc32(data, 5 * 1024 * 1024)
    assert stored[2] in ("", "3")


def _corrupt_part(number: int):
    """A before-send hook that flips one byte of part ``number`` after it was checksummed and
    signed: what a faulty network or disk would do to the bytes in flight."""
    def hook(request, **_):
        if f"partNumber={number}&" in request.url + "&":
            body = bytearray(request.body)
            body[len(body) // 2] ^= 0x01
            request.body = bytes(body)
    return hook


def test_bytes_changed_in_flight_are_caught_and_the_object_removed(local_stack, tmp_path):
    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "bad.bin").write_bytes(data)
    client = client_for()
    client.meta.events.register("before-send.s3.UploadPart", _corrupt_part(2))
    with pytest.raises(errors.IntegrityError, match="does not match the file sent"):
        upload_file(tmp_path / "bad.bin", "s3://nitronb/corrupt/obj.bin", client=client,
                    part_size=5 * 1024 * 1024, multipart_threshold=1024 * 1024)
    with pytest.raises(errors.NoSuchObjectError):
        download_file("s3://nitronb/corrupt/obj.bin", tmp_path / "never.bin")
    assert not (tmp_path / "never.bin").exists()


def test_parts_to_a_loopback_endpoint_sign_their_crc32_instead_of_hashing_the_body(local_stack,
                                                                                   tmp_path):
    (tmp_path / "p.bin").write_bytes(os.urandom(6 * 1024 * 1024))
    client = client_for()
    seen = []
    client.meta.events.register("before-send.s3.UploadPart",
                                lambda request, **_: seen.append(dict(request.headers)))
    upload_file(tmp_path / "p.bin", "s3://nitronb/unsigned/p.bin", client=client,
                part_size=5 * 1024 * 1024, multipart_threshold=1024 * 1024)
    assert len(seen) == 2
    for headers in seen:
        headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in headers.items()}
        assert headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD"
        signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        assert "x-amz-checksum-crc32" in signed and "x-amz-content-sha256" in signed
    # the client's own calls keep botocore's default: a plain-HTTP body is hashed
    seen.clear()
    upload = client.create_multipart_upload(Bucket="nitronb", Key="unsigned/own.bin")
    client.upload_part(Bucket="nitronb", Key="unsigned/own.bin", UploadId=upload["UploadId"],
                       PartNumber=1, Body=b"x" * 10)
    client.abort_multipart_upload(Bucket="nitronb", Key="unsigned/own.bin",
                                  UploadId=upload["UploadId"])
    sent = {k.lower(): v for k, v in seen[0].items()}
    assert sent["x-amz-content-sha256"] in (hashlib.sha256(b"x" * 10).hexdigest(),
                                            hashlib.sha256(b"x" * 10).hexdigest().encode())


def test_a_download_into_a_folder_keeps_the_object_name(local_stack, tmp_path):
    source = tmp_path / "named.bin"
    source.write_bytes(b"abc")
    upload_file(source, BUCKET, key_name="folder/named.bin")
    (tmp_path / "into").mkdir()
    assert download_file("s3://nitronb/folder/named.bin", tmp_path / "into").read_bytes() == b"abc"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read VmHWM")
def test_a_download_into_a_new_folder_or_a_device(local_stack, tmp_path):
    from nitronb.errors import StorageError

    (tmp_path / "f.bin").write_bytes(b"rows")
    uri = upload_file(tmp_path / "f.bin", "s3://nitronb/targets/", workspace=local_stack.workspace)
    got = download_file(uri, f"{tmp_path / 'newdir'}/", workspace=local_stack.workspace)
    assert got == tmp_path / "newdir" / "f.bin" and got.read_bytes() == b"rows"
    with pytest.raises(StorageError, match="not a regular file"):
        download_file(uri, "/dev/null", workspace=local_stack.workspace)
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_200_mb_object_is_streamed_in_bounded_memory(local_stack, tmp_path):
    """Upload and download in a child process whose peak memory must stay below the object."""
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:
        block = os.urandom(1024 * 1024)
        for _ in range(200):
            fh.write(block)
    script = (
        "import sys\n"
        "from nitronb.s3.transfers import upload_file, download_file\n"
        "uri = upload_file(sys.argv[1], 's3://nitronb/big/')\n"
        "download_file(uri, sys.argv[2])\n"
        "status = open('/proc/self/status').read()\n"
        "print(int(status.split('VmHWM:')[1].split()[0]) * 1024)\n")
    done = subprocess.run([sys.executable, "-c", script, str(big), str(tmp_path / "back.bin")],
                          capture_output=True, text=True, check=True,
                          env={**os.environ, "NITRONB_WORKSPACE": str(local_stack.workspace)})
    peak = int(done.stdout.strip())  # VmHWM: this process's own peak (ru_maxrss is inherited)
    assert peak < 150 * 1024 * 1024, f"peak RSS {peak / 2**20:.0f} MiB for a 200 MiB object"
    assert _sha(tmp_path / "back.bin") == _sha(big)


def _sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()



class _FakeS3:
    """Answers a client's multipart requests in place of the network, checking each part's
    CRC32 header against its body and answering the composite at completion, as S3 does."""

    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.headers: list[dict[str, str]] = []

    def __call__(self, request, **_):
        from botocore.awsrequest import AWSResponse

        headers = {k.lower(): (v.decode() if isinstance(v, bytes) else v)
                   for k, v in request.headers.items()}
        query = dict(p.split("=", 1) for p in request.url.split("?", 1)[1].split("&") if "=" in p)
        body, answer, reply = b"", {}, b""
        if "uploads" in request.url.split("?", 1)[1].split("&"):
            reply = (b"<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key>"
                     b"<UploadId>up1</UploadId></InitiateMultipartUploadResult>")
        elif request.method == "PUT":
            self.headers.append(headers)
            body = bytes(request.body)
            crc = base64.b64encode(zlib.crc32(body).to_bytes(4, "big")).decode()
            if headers.get("x-amz-checksum-crc32") != crc:
                return AWSResponse(request.url, 400, {}, _Raw(b"<Error><Code>BadDigest</Code>"
                                                             b"</Error>"))
            self.parts[int(query["partNumber"])] = body
            answer = {"ETag": f'"{hashlib.md5(body).hexdigest()}"',
                      "x-amz-checksum-crc32": crc}
        elif request.method == "POST":
            crcs = b"".join(zlib.crc32(self.parts[n]).to_bytes(4, "big")
                            for n in sorted(self.parts))
            composite = base64.b64encode(zlib.crc32(crcs).to_bytes(4, "big")).decode()
            md5s = b"".join(hashlib.md5(self.parts[n]).digest() for n in sorted(self.parts))
            reply = (f"<CompleteMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><ETag>"
                     f"&quot;{hashlib.md5(md5s).hexdigest()}-{len(self.parts)}&quot;</ETag>"
                     f"<ChecksumCRC32>{composite}-{len(self.parts)}</ChecksumCRC32>"
                     f"<ChecksumType>COMPOSITE</ChecksumType>"
                     f"</CompleteMultipartUploadResult>").encode()
        return AWSResponse(request.url, 200, answer, _Raw(reply))


class _Raw:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_):
        yield self.data


@pytest.mark.parametrize("endpoint, unsigned", [("https://s3.example.invalid", True),
                                                ("http://s3.example.invalid", False)])
def test_parts_are_sent_unsigned_only_over_tls_or_loopback(tmp_path, endpoint, unsigned):
    import boto3
    from botocore.config import Config

    data = os.urandom(11 * 1024 * 1024)
    (tmp_path / "f.bin").write_bytes(data)
    client = boto3.session.Session(aws_access_key_id="AKIAEXAMPLEEXAMPLE00",
                                   aws_secret_access_key="x" * 40, region_name="eu-west-1"
                                   ).client("s3", endpoint_url=endpoint,
                                            config=Config(s3={"addressing_style": "path"}))
    fake = _FakeS3()
    client.meta.events.register("before-send.s3", fake)
    upload_file(tmp_path / "f.bin", "s3://bucket/k", client=client, part_size=5 * 1024 * 1024,
                multipart_threshold=1024 * 1024)
    assert b"".join(fake.parts[n] for n in sorted(fake.parts)) == data
    assert len(fake.headers) == 3
    for headers in fake.headers:
        signed = headers["authorization"].split("SignedHeaders=")[1].split(",")[0].split(";")
        assert "x-amz-checksum-crc32" in signed
        assert (headers["x-amz-content-sha256"] == "UNSIGNED-PAYLOAD") == unsigned


# --- presigned URLs, used as the enclave app does -------------------------------------------


FORMS = [pytest.param(False, id="sigv4"), pytest.param(True, id="legacy")]


@pytest.fixture
def stored(local_stack, tmp_path):
    payload = os.urandom(50_000)
    source = tmp_path / "input.enc"
    source.write_bytes(payload)
    upload_file(source, "s3://nitronb/presigned/")
    return payload


@pytest.mark.parametrize("legacy", FORMS)
def test_a_presigned_get_serves_the_exact_bytes(stored, legacy):
    import requests

    signed = presign_download("local", "s3://nitronb/presigned", "input.enc", 60, legacy=legacy)
    assert signed.url == f"{signed.location}?{signed.query_string}"
    assert ("AWSAccessKeyId=" in signed.url) == legacy
    assert ("X-Amz-Signature=" in signed.url) == (not legacy)
    rebuilt = url_from_credentials(signed.location, credentials_json(signed.url, KEY))
    response = requests.get(rebuilt, timeout=30)
    assert response.status_code == 200
    assert response.content == stored


@needs_curl
@pytest.mark.parametrize("legacy", FORMS)
def test_curl_gets_and_puts_with_presigned_urls(stored, tmp_path, legacy):
    get = presign_download("local", "s3://nitronb/presigned/", "input.enc", 60, legacy=legacy)
    fetched = subprocess.run(["curl", "-sSf", get.url], capture_output=True, check=True)
    assert fetched.stdout == stored
    body = tmp_path / "result.enc"
    body.write_bytes(os.urandom(70_000))
    put = presign_upload("local", "s3://nitronb/output/", f"curl-{legacy}.enc", 60, legacy=legacy)
    subprocess.run(["curl", "-sSf", "-T", str(body), put.url], capture_output=True, check=True)
    back = download_file(f"s3://nitronb/output/curl-{legacy}.enc", tmp_path / "back.enc")
    assert back.read_bytes() == body.read_bytes()


@pytest.mark.parametrize("legacy", FORMS)
def test_a_presigned_put_with_requests_stores_the_object(local_stack, tmp_path, legacy):
    import requests

    payload = os.urandom(30_000)
    signed = presign_upload("local", "s3://nitronb/output/", "result.enc", 60, legacy=legacy)
    response = requests.put(signed.url, data=payload, timeout=30)
    assert response.status_code == 200, response.text
    assert download_file("s3://nitronb/output/result.enc", tmp_path / "r").read_bytes() == payload


def test_expired_urls_are_refused_in_both_forms(stored):
    import requests

    from nitronb.s3.presign import error_from_response

    urls = [presign_download("local", "s3://nitronb/presigned/", "input.enc", 1, legacy=legacy).url
            for legacy in (False, True)]
    time.sleep(2.2)
    for url in urls:
        response = requests.get(url, timeout=30)
        assert response.status_code == 403
        assert "<Code>AccessDenied</Code>" in response.text
        assert "Request has expired" in response.text
        assert isinstance(error_from_response(403, response.content, url),
                          errors.PresignedURLExpiredError)


def _tampered(legacy: bool, how: str) -> tuple[str, str]:
    signed = presign_download("local", "s3://nitronb/presigned/", "input.enc", 60, legacy=legacy)
    if how == "query":
        field = "Expires=" if legacy else "X-Amz-Expires="
        start = signed.url.index(field) + len(field)
        end = signed.url.find("&", start)
        end = len(signed.url) if end < 0 else end
        longer = int(signed.url[start:end]) + 1000
        return f"{signed.url[:start]}{longer}{signed.url[end:]}", "GET"
    if how == "object":
        return signed.url.replace("input.enc", "other.enc"), "GET"
    return signed.url, "PUT"


@pytest.mark.parametrize("legacy", FORMS)
@pytest.mark.parametrize("how", ["query", "object", "method"])
def test_tampered_urls_do_not_match_their_signature(stored, legacy, how):
    import requests

    from nitronb.s3.presign import error_from_response

    url, method = _tampered(legacy, how)
    response = requests.request(method, url, data=b"x" if method == "PUT" else None, timeout=30)
    assert response.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in response.text
    assert isinstance(error_from_response(403, response.content, url),
                      errors.SignatureMismatchError)


def test_a_url_signed_with_another_secret_is_refused(stored):
    import boto3
    import requests

    from nitronb.local.s3gate import load_credentials

    creds = load_credentials(local_stack_workspace())
    forged = boto3.client("s3", endpoint_url=client_for().meta.endpoint_url,
                          aws_access_key_id=creds["access_key_id"],
                          aws_secret_access_key="not-the-secret", region_name="us-east-1")
    url = forged.generate_presigned_url("get_object", Params={"Bucket": "nitronb",
                                                              "Key": "presigned/input.enc"})
    response = requests.get(url, timeout=30)
    assert response.status_code == 403
    assert "<Code>SignatureDoesNotMatch</Code>" in response.text


def local_stack_workspace() -> Path:
    return Path(os.environ["NITRONB_WORKSPACE"])


# --- errors ---------------------------------------------------------------------------------


def test_missing_bucket_and_object_are_named(local_stack, tmp_path):
    with pytest.raises(errors.NoSuchObjectError, match="no object s3://nitronb/none/such"):
        download_file("s3://nitronb/none/such", tmp_path / "x")
    with pytest.raises(errors.NoSuchBucketError, match="no-such-bucket"):
        download_file("s3://no-such-bucket/x", tmp_path / "x")
    source = tmp_path / "f"
    source.write_bytes(b"1")
    with pytest.raises(errors.NoSuchBucketError, match="create the bucket"):
        upload_file(source, "s3://no-such-bucket/")
    assert not (tmp_path / "x").exists()


def test_an_unreachable_endpoint_says_what_to_do(local_stack, tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.EndpointUnreachableError, match="nitronb local up"):
        download_file("s3://nitronb/x", tmp_path / "x", endpoint_url=f"http://127.0.0.1:{port}")


def test_the_local_profile_needs_the_stack_running(tmp_path):
    with pytest.raises(errors.EndpointUnreachableError, match="nitronb local up"):
        client_for("local", workspace=tmp_path)


def test_an_unknown_profile_is_a_credentials_error(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    with pytest.raises(errors.CredentialsMissingError, match="no AWS profile named 'nobody'"):
        presign_download("nobody", "s3://nitronb/", "x", 60)


def test_expiry_must_be_between_a_second_and_a_week(local_stack):
    for expiry in (0, 604801):
        with pytest.raises(errors.StorageError, match="seven days"):
            presign_download("local", BUCKET, "x", expiry)


# --- real AWS (only with a configured profile) ----------------------------------------------


@pytest.mark.aws
def test_round_trip_and_presign_on_aws(tmp_path):
    import requests

    profile = os.environ.get("NITRONB_AWS_PROFILE")
    s3dir = os.environ.get("NITRONB_AWS_S3DIR")
    if not profile or not s3dir:
        pytest.skip("set NITRONB_AWS_PROFILE and NITRONB_AWS_S3DIR to run against AWS")
    payload = os.urandom(20_000)
    (tmp_path / "aws.bin").write_bytes(payload)
    uri = upload_file(tmp_path / "aws.bin", s3dir, profile=profile)
    assert download_file(uri, tmp_path / "back", profile=profile).read_bytes() == payload
    for legacy in (False, True):
        signed = presign_download(profile, s3dir, "aws.bin", 60, legacy=legacy)
        assert requests.get(signed.url, timeout=60).content == payload

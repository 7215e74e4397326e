"""The local S3 endpoint streams object bodies between the socket and its files.

Real processes over HTTP: the endpoint is started with ``nitronb.local.stack.up`` in a temporary
workspace; its peak memory is the kernel's VmHWM of the endpoint process.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
import zlib
from pathlib import Path
from typing import Any

import pytest
import requests
from botocore.exceptions import ClientError

from nitronb.local import stack as local
from nitronb.s3 import client as storage
from nitronb.local.s3digest import CHECKSUMS
from nitronb.local.s3store import data_dir

MiB = 1024 * 1024
#: the object's size in the memory tests (far above the endpoint's bound below)
BIG = 300 * MiB
#: the most the endpoint process may hold at its peak while it moves a BIG object
BOUND = 150 * MiB


@pytest.fixture
def workspace(s3_only_workspace):
    return s3_only_workspace


def _pid(ws: Path) -> int:
    return local.status(ws)["s3"]["pid"]


def _peak(pid: int) -> int:
    """The process's peak resident memory so far (bytes)."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def _restart(ws: Path) -> None:
    assert local.down(ws)["s3"]["state"] == "stopped"
    assert local.up(ws)["s3"]["state"] == "running"


def _open_paths(pid: int) -> list[str]:
    """What process ``pid``'s open file descriptors point to (one closed meanwhile is left out)."""
    paths = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            paths.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except FileNotFoundError:
            continue
    return paths


def _random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "wb") as fh:
        for _ in range(size // MiB):
            chunk = os.urandom(MiB)
            digest.update(chunk)
            fh.write(chunk)
    return digest.hexdigest()


def _sha256_of_stream(chunks) -> str:
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def _file_range_sha256(path: Path, start: int, end: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(start)
        return hashlib.sha256(fh.read(end - start)).hexdigest()


def test_a_large_object_goes_up_and_down_every_way_in_bounded_memory(workspace, tmp_path):
    client = storage.client_for(workspace=workspace)
    source = tmp_path / "big.bin"
    want = _random_file(source, BIG)
    pid = _pid(workspace)

    with open(source, "rb") as fh:  # one PUT of the whole object
        client.put_object(Bucket="nitronb", Key="single.bin", Body=fh)
    client.upload_file(str(source), "nitronb", "multipart.bin")  # parts in parallel
    put_url = client.generate_presigned_url(
        "put_object", Params={"Bucket": "nitronb", "Key": "presigned.bin"}, ExpiresIn=600)
    with open(source, "rb") as fh:
        assert requests.put(put_url, data=fh, timeout=300).status_code == 200

    for key in ("single.bin", "multipart.bin", "presigned.bin"):
        body = client.get_object(Bucket="nitronb", Key=key)["Body"]
        assert _sha256_of_stream(iter(lambda: body.read(MiB), b"")) == want, key
        assert client.head_object(Bucket="nitronb", Key=key)["ContentLength"] == BIG
    ranged = client.get_object(Bucket="nitronb", Key="multipart.bin",
                               Range=f"bytes={10 * MiB - 7}-{20 * MiB + 3}")
    assert ranged["ContentRange"] == f"bytes {10 * MiB - 7}-{20 * MiB + 3}/{BIG}"
    assert hashlib.sha256(ranged["Body"].read()).hexdigest() == _file_range_sha256(
        source, 10 * MiB - 7, 20 * MiB + 4)
    get_url = client.generate_presigned_url(
        "get_object", Params={"Bucket": "nitronb", "Key": "presigned.bin"}, ExpiresIn=600)
    with requests.get(get_url, stream=True, timeout=300) as answer:
        assert _sha256_of_stream(answer.iter_content(MiB)) == want
    out = tmp_path / "out.bin"
    client.download_file("nitronb", "multipart.bin", str(out))  # ranged GETs in parallel
    assert _sha256_of_stream(iter(lambda f=open(out, "rb"): f.read(MiB), b"")) == want

    assert _peak(pid) < BOUND


def test_stored_objects_are_served_from_their_files_after_a_restart(workspace, tmp_path):
    client = storage.client_for(workspace=workspace)
    source = tmp_path / "big.bin"
    want = _random_file(source, BIG)
    client.upload_file(str(source), "nitronb", "kept.bin")
    _restart(workspace)
    pid = _pid(workspace)

    scratch = tempfile.gettempdir()
    opened = _open_paths(pid)
    assert not [p for p in opened if p.startswith(scratch) and p.endswith("(deleted)")]
    client = storage.client_for(workspace=workspace)
    body = client.get_object(Bucket="nitronb", Key="kept.bin")["Body"]
    assert _sha256_of_stream(iter(lambda: body.read(MiB), b"")) == want
    assert _peak(pid) < BOUND


def _aws_chunked(body: bytes, trailer: str, algorithm: str = "crc32") -> bytes:
    chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
    framed = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
    return framed + b"0\r\n" + f"x-amz-checksum-{algorithm}:{trailer}\r\n\r\n".encode()


def _checksum(body: bytes, algorithm: str = "crc32") -> str:
    """The base64 S3 checksum of ``body``, from zlib, hashlib, crc32c and awscrt (the
    endpoint's own digests are pinned to published check values in test_s3gate.py)."""
    if algorithm == "crc32":
        raw = zlib.crc32(body).to_bytes(4, "big")
    elif algorithm == "crc32c":
        import crc32c

        raw = crc32c.crc32c(body).to_bytes(4, "big")
    elif algorithm == "crc64nvme":
        from awscrt import checksums

        raw = checksums.crc64nvme(body).to_bytes(8, "big")
    else:
        raw = hashlib.new(algorithm, body).digest()
    return base64.b64encode(raw).decode()


def _send_chunked(ws: Path, key: str, body: bytes, trailer: str,
                  algorithm: str = "crc32") -> requests.Response:
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from nitronb.local.s3auth import load_credentials

    keys = load_credentials(ws)
    url = f"{local.status(ws)['s3']['url']}/nitronb/{key}"
    headers = {"x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
               "Content-Encoding": "aws-chunked", "x-amz-trailer": f"x-amz-checksum-{algorithm}",
               "x-amz-sdk-checksum-algorithm": algorithm.upper(),
               "x-amz-decoded-content-length": str(len(body))}
    framed = _aws_chunked(body, trailer, algorithm)
    request = AWSRequest("PUT", url, data=framed, headers=headers)
    S3SigV4Auth(Credentials(keys["access_key_id"], keys["secret_access_key"]), "s3",
                "us-east-1").add_auth(request)
    return requests.put(url, data=framed, headers=dict(request.headers.items()), timeout=60)


#: CRC32C and CRC64NVME need awscrt (boto3[crt]) in boto3; the endpoint checks CRC64NVME with it
_needs_crt = pytest.mark.skipif("crc64nvme" not in CHECKSUMS,
                                reason="awscrt (boto3[crt]) is not installed")
ALGORITHMS = ["crc32", "crc32c", pytest.param("crc64nvme", marks=_needs_crt), "sha1", "sha256"]
BOTO3_ALGORITHMS = ["crc32", pytest.param("crc32c", marks=_needs_crt),
                    pytest.param("crc64nvme", marks=_needs_crt), "sha1", "sha256"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_an_aws_chunked_body_is_decoded_and_checked_against_its_trailer(workspace, algorithm):
    client = storage.client_for(workspace=workspace)
    body = os.urandom(200_000)

    refused = _send_chunked(workspace, "chunked.bin", body, _checksum(b"other", algorithm),
                            algorithm)
    assert refused.status_code == 400 and b"<Code>BadDigest</Code>" in refused.content
    with pytest.raises(ClientError):
        client.head_object(Bucket="nitronb", Key="chunked.bin")

    sent = _send_chunked(workspace, "chunked.bin", body, _checksum(body, algorithm), algorithm)
    assert sent.status_code == 200
    got = client.get_object(Bucket="nitronb", Key="chunked.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == body
    assert got["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert got[f"Checksum{algorithm.upper()}"] == _checksum(body, algorithm)


@pytest.mark.parametrize("algorithm", BOTO3_ALGORITHMS)
def test_boto3_puts_and_gets_with_each_checksum(workspace, algorithm):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    body = os.urandom(300_000)
    client.put_object(Bucket="nitronb", Key="sum.bin", Body=body,
                      ChecksumAlgorithm=algorithm.upper())
    got = client.get_object(Bucket="nitronb", Key="sum.bin", ChecksumMode="ENABLED")
    assert got["Body"].read() == body  # boto3 checks the answered checksum as it reads
    assert got[f"Checksum{algorithm.upper()}"] == _checksum(body, algorithm)


def test_a_multipart_crc32c_checksum_is_the_composite_of_its_parts(workspace):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    parts = [os.urandom(5 * MiB), b"tail"]
    upload = client.create_multipart_upload(Bucket="nitronb", Key="parts.bin",
                                            ChecksumAlgorithm="CRC32C")["UploadId"]

    def send(number: int, body: bytes, checksum: str) -> dict[str, Any]:
        etag = client.upload_part(Bucket="nitronb", Key="parts.bin", UploadId=upload,
                                  PartNumber=number, Body=body, ChecksumCRC32C=checksum)["ETag"]
        return {"PartNumber": number, "ETag": etag, "ChecksumCRC32C": checksum}

    with pytest.raises(ClientError) as refused:
        send(1, parts[0], _checksum(b"other", "crc32c"))
    assert refused.value.response["Error"]["Code"] == "BadDigest"
    done = [send(n, body, _checksum(body, "crc32c")) for n, body in enumerate(parts, 1)]
    client.complete_multipart_upload(Bucket="nitronb", Key="parts.bin", UploadId=upload,
                                     MultipartUpload={"Parts": done})
    composite = b"".join(base64.b64decode(d["ChecksumCRC32C"]) for d in done)
    got = client.get_object(Bucket="nitronb", Key="parts.bin", ChecksumMode="ENABLED")
    assert got["ChecksumCRC32C"] == f"{_checksum(composite, 'crc32c')}-2"
    assert got["Body"].read() == b"".join(parts)
    head = client.head_object(Bucket="nitronb", Key="parts.bin", ChecksumMode="ENABLED")
    assert head["ChecksumCRC32C"] == f"{_checksum(composite, 'crc32c')}-2"
    assert head["ChecksumType"] == "COMPOSITE" and head["ContentLength"] == 5 * MiB + 4


def test_head_answers_as_s3_does(workspace):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    put = client.put_object(Bucket="nitronb", Key="h.bin", Body=b"head", ChecksumAlgorithm="SHA1")
    head = client.head_object(Bucket="nitronb", Key="h.bin", ChecksumMode="ENABLED")
    assert (head["ContentLength"], head["ETag"]) == (4, put["ETag"])
    assert head["ChecksumSHA1"] == _checksum(b"head", "sha1")
    for asked, status in (({"IfNoneMatch": put["ETag"]}, 304), ({"IfMatch": '"other"'}, 412)):
        with pytest.raises(ClientError) as answered:
            client.head_object(Bucket="nitronb", Key="h.bin", ChecksumMode="ENABLED", **asked)
        assert answered.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    missing = requests.head(client.generate_presigned_url(
        "head_object", Params={"Bucket": "nitronb", "Key": "none"}), timeout=30)
    assert (missing.status_code, missing.content) == (404, b"")
    # an archived object: HEAD tells its storage class, where GET is refused
    client.put_object(Bucket="nitronb", Key="cold", Body=b"x", StorageClass="GLACIER")
    assert client.head_object(Bucket="nitronb", Key="cold",
                              ChecksumMode="ENABLED")["StorageClass"] == "GLACIER"
    # a deleted object of a versioned bucket: its delete marker
    client.create_bucket(Bucket="versions")
    client.put_bucket_versioning(Bucket="versions",
                                 VersioningConfiguration={"Status": "Enabled"})
    client.put_object(Bucket="versions", Key="k", Body=b"v1")
    client.delete_object(Bucket="versions", Key="k")
    with pytest.raises(ClientError) as gone:
        client.head_object(Bucket="versions", Key="k")
    assert gone.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amz-delete-marker"] == "true"


def test_ranges_are_answered_as_s3_answers_them(workspace):
    client = storage.client_for(workspace=workspace)
    body = os.urandom(1000)
    client.put_object(Bucket="nitronb", Key="r.bin", Body=body)

    suffix = client.get_object(Bucket="nitronb", Key="r.bin", Range="bytes=-10")
    assert (suffix["Body"].read(), suffix["ContentRange"]) == (body[-10:], "bytes 990-999/1000")
    tail = client.get_object(Bucket="nitronb", Key="r.bin", Range="bytes=995-5000")
    assert tail["Body"].read() == body[995:]
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket="nitronb", Key="r.bin", Range="bytes=1000-")
    assert caught.value.response["Error"]["Code"] == "InvalidRange"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    etag = client.head_object(Bucket="nitronb", Key="r.bin")["ETag"]
    with pytest.raises(ClientError) as caught:
        client.get_object(Bucket="nitronb", Key="r.bin", IfNoneMatch=etag)
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 304


def test_copies_and_older_versions_keep_their_bytes(workspace):
    client = storage.client_for(workspace=workspace)
    client.put_object(Bucket="nitronb", Key="source.bin", Body=b"source bytes",
                      Metadata={"owner": "data"})
    client.copy_object(Bucket="nitronb", Key="copy.bin",
                       CopySource={"Bucket": "nitronb", "Key": "source.bin"})
    client.delete_object(Bucket="nitronb", Key="source.bin")
    client.create_bucket(Bucket="versions")
    client.put_bucket_versioning(Bucket="versions",
                                 VersioningConfiguration={"Status": "Enabled"})
    first = client.put_object(Bucket="versions", Key="v.bin", Body=b"first")["VersionId"]
    client.put_object(Bucket="versions", Key="v.bin", Body=b"second")

    copy = client.get_object(Bucket="nitronb", Key="copy.bin")
    assert (copy["Body"].read(), copy["Metadata"]) == (b"source bytes", {"owner": "data"})
    older = client.get_object(Bucket="versions", Key="v.bin", VersionId=first)
    assert older["Body"].read() == b"first"
    assert client.get_object(Bucket="versions", Key="v.bin")["Body"].read() == b"second"
    _restart(workspace)
    client = storage.client_for(workspace=workspace)
    assert client.get_object(Bucket="nitronb", Key="copy.bin")["Body"].read() == b"source bytes"


def test_a_workspace_in_the_first_format_still_loads(tmp_path, monkeypatch):
    monkeypatch.setattr(local, "SERVICES", {"s3": local.SERVICES["s3"]})
    ws = tmp_path / "ws"
    monkeypatch.setenv("NITRONB_WORKSPACE", str(ws))
    objects = data_dir(ws) / "buckets" / "nitronb" / "objects"
    objects.mkdir(parents=True)
    (objects.parent / "bucket.json").write_text(json.dumps({
        "format": 1, "name": "nitronb", "region": "us-east-1",
        "created": "2026-01-01T00:00:00.000000Z"}), encoding="utf-8")
    parts = [os.urandom(5 * MiB), b"tail"]
    name = hashlib.sha256(b"old.bin").hexdigest()
    (objects / f"{name}.abc.bin").write_bytes(b"".join(parts))
    md5s = [hashlib.md5(p).digest() for p in parts]
    (objects / f"{name}.json").write_text(json.dumps({
        "format": 1, "bucket": "nitronb", "key": "old.bin", "data": f"{name}.abc.bin",
        "size": sum(map(len, parts)), "etag": f"{hashlib.md5(b''.join(md5s)).hexdigest()}-2",
        "last_modified": "2026-01-01T00:00:00.000000Z",
        "metadata": {"Content-Type": "binary/octet-stream"}, "storage_class": "STANDARD",
        "tags": {"owner": "data"},
        "parts": [{"number": i + 1, "size": len(p), "etag": m.hex()}
                  for i, (p, m) in enumerate(zip(parts, md5s))]}), encoding="utf-8")
    local.up(ws)
    try:
        client = storage.client_for(workspace=ws)
        assert client.get_object(Bucket="nitronb", Key="old.bin")["Body"].read() == \
            b"".join(parts)
        tags = client.get_object_tagging(Bucket="nitronb", Key="old.bin")["TagSet"]
        assert tags == [{"Key": "owner", "Value": "data"}]
    finally:
        local.down(ws)


def test_a_chunked_body_without_content_length_is_refused_not_stored_empty(workspace):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    url = client.generate_presigned_url(
        "put_object", Params={"Bucket": "nitronb", "Key": "chunked.bin"}, ExpiresIn=600)
    answer = requests.put(url, data=iter([b"abc", b"def"]))  # Transfer-Encoding: chunked
    assert answer.status_code == 411
    assert b"MissingContentLength" in answer.content
    with pytest.raises(ClientError) as missing:
        client.head_object(Bucket="nitronb", Key="chunked.bin")
    assert missing.value.response["Error"]["Code"] in ("404", "NoSuchKey")
    assert not [p for p in (workspace / "local" / "s3-uploads").rglob("*") if p.is_file()]


def test_a_get_with_part_number_answers_that_part_of_a_multipart_object(workspace):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    first, second = os.urandom(5 * MiB), b"tail"
    upload = client.create_multipart_upload(Bucket="nitronb", Key="parts.bin")["UploadId"]
    done = [{"PartNumber": n, "ETag": client.upload_part(
        Bucket="nitronb", Key="parts.bin", UploadId=upload, PartNumber=n, Body=body)["ETag"]}
        for n, body in ((1, first), (2, second))]
    client.complete_multipart_upload(Bucket="nitronb", Key="parts.bin", UploadId=upload,
                                     MultipartUpload={"Parts": done})
    for number, body, begin in ((1, first, 0), (2, second, len(first))):
        got = client.get_object(Bucket="nitronb", Key="parts.bin", PartNumber=number)
        assert got["Body"].read() == body
        assert got["PartsCount"] == 2
        assert got["ContentRange"] == f"bytes {begin}-{begin + len(body) - 1}/{len(first) + 4}"
    with pytest.raises(ClientError) as beyond:
        client.get_object(Bucket="nitronb", Key="parts.bin", PartNumber=3)
    assert beyond.value.response["Error"]["Code"] == "InvalidPartNumber"


def test_a_part_sent_to_a_finished_upload_is_no_such_upload_and_leaves_nothing(workspace):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    for finish in ("complete", "abort"):
        upload = client.create_multipart_upload(Bucket="nitronb", Key="m.bin")["UploadId"]
        etag = client.upload_part(Bucket="nitronb", Key="m.bin", UploadId=upload,
                                  PartNumber=1, Body=b"first")["ETag"]
        if finish == "complete":
            client.complete_multipart_upload(
                Bucket="nitronb", Key="m.bin", UploadId=upload,
                MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": etag}]})
        else:
            client.abort_multipart_upload(Bucket="nitronb", Key="m.bin", UploadId=upload)
        with pytest.raises(ClientError) as late:
            client.upload_part(Bucket="nitronb", Key="m.bin", UploadId=upload, PartNumber=2,
                               Body=b"late")
        assert late.value.response["Error"]["Code"] == "NoSuchUpload"
    assert client.get_object(Bucket="nitronb", Key="m.bin")["Body"].read() == b"first"
    assert not [p for p in (workspace / "local" / "s3-uploads").rglob("*") if p.is_file()]


def test_completing_an_upload_again_is_no_such_upload(workspace):
    client = storage.client_for(workspace=workspace)
    client.create_bucket(Bucket="nitronb")
    upload = client.create_multipart_upload(Bucket="nitronb", Key="twice.bin")["UploadId"]
    etag = client.upload_part(Bucket="nitronb", Key="twice.bin", UploadId=upload,
                              PartNumber=1, Body=b"once")["ETag"]
    parts = {"Parts": [{"PartNumber": 1, "ETag": etag}]}
    client.complete_multipart_upload(Bucket="nitronb", Key="twice.bin", UploadId=upload,
                                     MultipartUpload=parts)
    with pytest.raises(ClientError) as again:
        client.complete_multipart_upload(Bucket="nitronb", Key="twice.bin", UploadId=upload,
                                         MultipartUpload=parts)
    assert again.value.response["Error"]["Code"] == "NoSuchUpload"
    assert client.get_object(Bucket="nitronb", Key="twice.bin")["Body"].read() == b"once"

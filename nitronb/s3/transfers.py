"""Streaming, integrity-checked transfers between files and an object store:
:func:`upload_file` and :func:`download_file`, through a client of :mod:`nitronb.s3.client`.

Uploads are multipart above a threshold, parts sent in parallel, each read from the file into its
worker's reusable buffer, so memory stays at ``concurrency × part_size``; each part carries its
CRC32 (in a signed header), and the store's composite CRC32 of the completed object is compared
with the one of the bytes read. A single-request upload is checked against its ETag (the MD5 of
the object). Downloads are streamed to a temporary file beside the target, checked against the
ETag (the MD5 of the object, or of its parts' MD5s) and renamed when complete.
"""

from __future__ import annotations

import base64
import contextvars
import hashlib
import os
import re
import secrets
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nitronb.errors import IntegrityError, NoSuchBucketError, NoSuchObjectError, StorageError
from nitronb.s3.client import (_CHUNK, _MAX_PARTS, CONCURRENCY, LOCAL_PROFILE, MULTIPART_THRESHOLD,
                               PART_SIZE, MiB, S3Dir, _call, _resolve, _target, parse_s3_uri)


# --- integrity ------------------------------------------------------------------------------


def _expected_etag(part_md5s: list[bytes], multipart: bool) -> str:
    if not multipart:
        return part_md5s[0].hex()
    return f"{hashlib.md5(b''.join(part_md5s)).hexdigest()}-{len(part_md5s)}"


def _etag_checkable(etag: str, response: dict[str, Any]) -> bool:
    """Whether the ETag is an MD5 the bytes can be checked against (not under SSE-KMS/SSE-C)."""
    if response.get("ServerSideEncryption") in ("aws:kms", "aws:kms:dsse"):
        return False
    if response.get("SSECustomerAlgorithm"):
        return False
    return re.fullmatch(r"[0-9a-f]{32}(-\d+)?", etag) is not None


def _clean_etag(etag: str | None) -> str:
    return (etag or "").strip('"').lower()


def _b64_crc(crc: int) -> str:
    """A CRC32 as S3 writes it: the base64 of its 4 big-endian bytes."""
    return base64.b64encode(crc.to_bytes(4, "big")).decode()


def _composite_matches(client: Any, profile: str, bucket: str, key: str,
                       response: dict[str, Any], expected: str) -> bool:
    """Whether the store's composite CRC32 of a completed multipart upload is ``expected``
    (``base64-N``: the CRC32 of the parts' CRC32s, and the number of parts).

    S3 answers it on completion; a store that does not is asked with a checksum-mode HEAD of
    the version just written. A store that keeps no checksum cannot be checked (True).
    """
    value, kind = response.get("ChecksumCRC32"), response.get("ChecksumType")
    if not value:
        same = {"IfMatch": response["ETag"]} if response.get("ETag") else {}
        head = _call(client.head_object, bucket=bucket, key=key, profile=profile, Bucket=bucket,
                     Key=key, ChecksumMode="ENABLED", **same)
        value, kind = head.get("ChecksumCRC32"), head.get("ChecksumType")
    want_digest, _, want_parts = expected.partition("-")
    etag = _clean_etag(response.get("ETag"))
    if _etag_checkable(etag, response) and "-" in etag and etag.split("-")[1] != want_parts:
        return False  # the store did not assemble the object from the parts sent
    if not value or (kind or "COMPOSITE") != "COMPOSITE":
        return True
    digest, _, parts = value.partition("-")
    return digest == want_digest and parts in ("", want_parts)


#: set while a part is sent whose body need not be SHA-256 hashed for its signature
_UNSIGNED_PAYLOAD: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "nitronb_unsigned_payload", default=False)


def _part_payload_unsigned(client: Any) -> bool:
    """Whether parts sent through ``client`` go with an unsigned payload (SigV4
    ``UNSIGNED-PAYLOAD``: the body is covered by its signed CRC32 header, not a SHA-256 of it).

    That is botocore's own rule for a checksummed body over HTTPS; over plain HTTP it hashes
    every body, which is waived only for a loopback endpoint (the bytes never leave the machine).
    """
    from urllib.parse import urlsplit

    url = urlsplit(client.meta.endpoint_url or "")
    if url.scheme != "https" and url.hostname not in ("127.0.0.1", "localhost", "::1"):
        return False
    client.meta.events.register("before-sign.s3.UploadPart", _unsigned_when_asked,
                                unique_id="nitronb-unsigned-part-payload")
    return True


def _unsigned_when_asked(request: Any, **_: Any) -> None:
    if not _UNSIGNED_PAYLOAD.get():
        return
    config = request.context.get("client_config")
    if config is None:
        return
    from botocore.config import Config

    s3_options = dict(getattr(config, "s3", None) or {})
    s3_options["payload_signing_enabled"] = False
    request.context["client_config"] = config.merge(Config(s3=s3_options))


# --- upload ---------------------------------------------------------------------------------


def upload_file(path: str | os.PathLike[str], s3dir_or_uri: str | S3Dir, *,
                profile: str = LOCAL_PROFILE, key_name: str | None = None,
                progress: bool | None = None, endpoint_url: str | None = None,
                workspace: str | os.PathLike[str] | None = None, client: Any = None,
                part_size: int = PART_SIZE, concurrency: int = CONCURRENCY,
                multipart_threshold: int = MULTIPART_THRESHOLD) -> str:
    """Upload a file; return the object's ``s3://`` URI.

    ``s3dir_or_uri`` is a directory (ends with ``/``, or ``key_name`` is given: the object is
    named ``key_name`` or the file's name) or a full object URI. ``progress`` shows a bar (default:
    when stderr is a terminal). Raises :class:`~nitronb.errors.IntegrityError` (and removes the
    object) if the store's checksum of the object does not match the bytes sent: its ETag (MD5)
    for a single request, its composite CRC32 for a multipart upload.
    """
    from nitronb._progress import progress_bar

    source = Path(path)
    if not source.is_file():
        raise StorageError(f"{source} is not a file.", hint="Check the path of the file to upload.")
    bucket, key = _target(s3dir_or_uri, source, key_name)
    client, profile = _resolve(client, profile, endpoint_url, workspace)
    size = source.stat().st_size
    uri = f"s3://{bucket}/{key}"
    with open(source, "rb") as fh, progress_bar(size, f"upload {key.rsplit('/', 1)[-1]}",
                                                enabled=progress) as bar:
        if size < multipart_threshold:
            data = fh.read()
            response = _call(client.put_object, bucket=bucket, key=key, profile=profile,
                             Bucket=bucket, Key=key, Body=data)
            expected = hashlib.md5(data).hexdigest()
            bar.update(len(data))
            del data
            etag = _clean_etag(response.get("ETag"))
            matches = not _etag_checkable(etag, response) or etag == expected
        else:
            response, composite = _multipart_upload(client, profile, fh.fileno(), size, bucket,
                                                    key, part_size, concurrency, bar)
            matches = _composite_matches(client, profile, bucket, key, response, composite)
    if not matches:
        _call(client.delete_object, bucket=bucket, key=key, profile=profile, Bucket=bucket, Key=key)
        raise IntegrityError(f"the store's checksum of {uri} does not match the file sent; the "
                             "object was removed.", url=uri, hint="Upload it again.")
    return uri


def _multipart_upload(client: Any, profile: str, fd: int, size: int, bucket: str, key: str,
                      part_size: int, concurrency: int, bar: Any) -> tuple[dict, str]:
    """Send the file as parts in parallel; the completed upload's answer and the composite
    CRC32 (``base64-N``) the store must report for the bytes sent."""
    part_size = max(part_size, -(-size // _MAX_PARTS), 5 * MiB)
    count = -(-size // part_size)
    created = _call(client.create_multipart_upload, bucket=bucket, key=key, profile=profile,
                    Bucket=bucket, Key=key, ChecksumAlgorithm="CRC32")
    upload_id = created["UploadId"]
    lock = threading.Lock()
    buffers = _PartBuffers()
    unsigned = _part_payload_unsigned(client)

    def send(number: int) -> tuple[dict[str, Any], int]:
        offset = (number - 1) * part_size
        body = buffers.read(fd, offset, min(part_size, size - offset))
        crc = zlib.crc32(body)
        token = _UNSIGNED_PAYLOAD.set(unsigned)
        try:
            answer = _call(client.upload_part, bucket=bucket, key=key, profile=profile,
                           Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                           Body=body, ChecksumCRC32=_b64_crc(crc))
        finally:
            _UNSIGNED_PAYLOAD.reset(token)
        with lock:
            bar.update(len(body))
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumCRC32": _b64_crc(crc)}, crc

    try:
        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            results = list(pool.map(send, range(1, count + 1)))
        response = _call(client.complete_multipart_upload, bucket=bucket, key=key,
                         profile=profile, Bucket=bucket, Key=key, UploadId=upload_id,
                         MultipartUpload={"Parts": [part for part, _ in results]})
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        except Exception:  # the original failure is what the user needs to see
            pass
        raise
    composite = b"".join(crc.to_bytes(4, "big") for _, crc in results)
    return response, f"{_b64_crc(zlib.crc32(composite))}-{count}"


class _PartBuffers(threading.local):
    """One reusable part-sized buffer per worker thread: memory stays at workers × part size."""

    def read(self, fd: int, offset: int, length: int) -> bytearray:
        buffer = getattr(self, "buffer", None)
        if buffer is None or len(buffer) != length:
            buffer = self.buffer = bytearray(length)
        view, done = memoryview(buffer), 0
        while done < length:
            got = os.preadv(fd, [view[done:]], offset + done)
            if got == 0:
                raise IntegrityError("the file being uploaded became shorter.",
                                     hint="Do not change a file while it is uploaded.")
            done += got
        return buffer


# --- download -------------------------------------------------------------------------------


def download_file(s3uri: str, path: str | os.PathLike[str], *, profile: str = LOCAL_PROFILE,
                  progress: bool | None = None, endpoint_url: str | None = None,
                  workspace: str | os.PathLike[str] | None = None, client: Any = None,
                  concurrency: int = CONCURRENCY, parallel: bool | None = None) -> Path:
    """Download an object into ``path`` atomically (temporary file beside it, then rename).

    ``parallel`` fetches a multipart object's parts as concurrent ranged GETs (default: yes,
    except on the local endpoint, which reads the whole object for every range). Raises
    :class:`~nitronb.errors.IntegrityError` if the bytes do not match the object's ETag or size.
    """
    from nitronb._progress import progress_bar

    bucket, key = parse_s3_uri(s3uri)
    target = Path(os.path.realpath(path))  # through a symlink: replace the file it names
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        target = target / Path(key).name  # a folder (new when given with a trailing "/")
    if target.exists() and not target.is_file():
        raise StorageError(f"{target} is not a regular file; download into a file or a folder.",
                           hint="Give a file path, or a folder to keep the object's name.")
    client, profile = _resolve(client, profile, endpoint_url, workspace)
    if parallel is None:
        parallel = profile != LOCAL_PROFILE
    head = _head(client, profile, bucket, key)
    size = int(head["ContentLength"])
    etag = _clean_etag(head.get("ETag"))
    spans = _part_spans(client, profile, bucket, key, etag, size)
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f".{target.name}.{secrets.token_hex(4)}.part"
    fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with progress_bar(size, f"download {Path(key).name}", enabled=progress) as bar:
            if parallel and len(spans) > 1:
                md5s = _get_ranges(client, profile, fd, bucket, key, head["ETag"], spans, size,
                                   concurrency, bar)
            else:
                md5s = _get_stream(client, profile, fd, bucket, key, head["ETag"], spans, bar)
        os.fsync(fd)
        written = os.fstat(fd).st_size
        if written != size:
            raise IntegrityError(f"downloaded {written} bytes of {s3uri}, expected {size}.",
                                 url=s3uri, hint="Download it again.")
        multipart = "-" in etag
        if _etag_checkable(etag, head) and etag != _expected_etag(md5s, multipart):
            raise IntegrityError(f"the bytes downloaded from {s3uri} do not match its checksum.",
                                 url=s3uri, hint="Download it again.")
        os.close(fd)
        fd = -1
        os.replace(temp, target)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        temp.unlink(missing_ok=True)
        raise
    return target


def _head(client: Any, profile: str, bucket: str, key: str, **extra: Any) -> dict[str, Any]:
    try:
        return _call(client.head_object, bucket=bucket, key=key, profile=profile,
                     Bucket=bucket, Key=key, **extra)
    except NoSuchObjectError:
        # HEAD has no body: tell a missing bucket from a missing object
        import botocore.exceptions as bce

        try:
            client.head_bucket(Bucket=bucket)
        except bce.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchBucket"):
                raise NoSuchBucketError(f"the bucket {bucket!r} does not exist.",
                                        url=f"s3://{bucket}/",
                                        hint="Check the S3 URI, or create the bucket.") from None
        raise


def _part_spans(client: Any, profile: str, bucket: str, key: str, etag: str,
                size: int) -> list[tuple[int, int]]:
    """The (start, length) of each part the object was uploaded in (one span if not multipart)."""
    match = re.fullmatch(r"[0-9a-f]{32}-(\d+)", etag)
    if not match or int(match.group(1)) < 2:
        return [(0, size)]
    count = int(match.group(1))
    first = int(_head(client, profile, bucket, key, PartNumber=1)["ContentLength"])
    if first > 0 and (count - 1) * first < size <= count * first:
        return [(i * first, min(first, size - i * first)) for i in range(count)]
    spans, start = [], 0  # parts of unequal sizes: ask for each one
    for number in range(1, count + 1):
        length = int(_head(client, profile, bucket, key, PartNumber=number)["ContentLength"])
        spans.append((start, length))
        start += length
    if start != size:
        raise IntegrityError(f"the parts of s3://{bucket}/{key} add up to {start} bytes, not "
                             f"{size}.", url=f"s3://{bucket}/{key}")
    return spans


def _write_at(fd: int, chunk: bytes, offset: int) -> None:
    view = memoryview(chunk)
    while view:
        written = os.pwrite(fd, view, offset)
        offset += written
        view = view[written:]


def _get_stream(client: Any, profile: str, fd: int, bucket: str, key: str, etag: str,
                spans: list[tuple[int, int]], bar: Any) -> list[bytes]:
    """One GET; the MD5 of each part is computed as its bytes pass."""
    response = _call(client.get_object, bucket=bucket, key=key, profile=profile,
                     Bucket=bucket, Key=key, IfMatch=etag)
    ends = [start + length for start, length in spans]
    md5s, digest, offset, part = [], hashlib.md5(), 0, 0
    for chunk in response["Body"].iter_chunks(_CHUNK):
        _write_at(fd, chunk, offset)
        bar.update(len(chunk))
        view = memoryview(chunk)
        while view:
            room = ends[part] - offset if part < len(ends) else len(view)
            piece, view = view[:room], view[room:]
            digest.update(piece)
            offset += len(piece)
            if part < len(ends) and offset == ends[part]:
                md5s.append(digest.digest())
                digest, part = hashlib.md5(), part + 1
    if part < len(ends):
        md5s.append(digest.digest())
    return md5s


def _get_ranges(client: Any, profile: str, fd: int, bucket: str, key: str, etag: str,
                spans: list[tuple[int, int]], size: int, concurrency: int,
                bar: Any) -> list[bytes]:
    """One ranged GET per part, in parallel, each written at its offset."""
    lock = threading.Lock()

    def fetch(span: tuple[int, int]) -> bytes:
        start, length = span
        response = _call(client.get_object, bucket=bucket, key=key, profile=profile,
                         Bucket=bucket, Key=key, IfMatch=etag,
                         Range=f"bytes={start}-{start + length - 1}")
        digest, offset = hashlib.md5(), start
        for chunk in response["Body"].iter_chunks(_CHUNK):
            digest.update(chunk)
            _write_at(fd, chunk, offset)
            offset += len(chunk)
            with lock:
                bar.update(len(chunk))
        if offset - start != length:
            raise IntegrityError(f"received {offset - start} bytes of {length} for bytes "
                                 f"{start}- of s3://{bucket}/{key}.", url=f"s3://{bucket}/{key}",
                                 hint="Download it again.")
        return digest.digest()

    os.ftruncate(fd, size)
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(fetch, spans))

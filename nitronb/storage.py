"""Object storage: S3 paths, clients for a profile, and streaming, integrity-checked transfers.

The profile ``local`` is the embedded local endpoint (``nitronb local up``); any other name is a
boto3 profile; ``endpoint_url`` reaches any S3-compatible store. Uploads are multipart above a
threshold, parts sent in parallel, each read from the file into its worker's reusable buffer,
so memory stays at ``concurrency × part_size``; each part carries its CRC32 (in a signed header),
and the store's composite CRC32 of the completed object is compared with the one of the bytes
read. A single-request upload is checked against its ETag (the MD5 of the object). Downloads
are streamed to a temporary file beside the target, checked against the ETag (the MD5 of the
object, or of its parts' MD5s) and renamed when complete. Checks are made whenever the store
exposes the checksum.

Presigning and dataset credentials are in :mod:`nitronb.presign` and re-exported here.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from nitronb.errors import (BadS3PathError, CredentialsMissingError, EndpointUnreachableError,
                            IntegrityError, LocalStackError, NoSuchBucketError, NoSuchObjectError,
                            PresignedURLExpiredError, SignatureMismatchError, StorageError)
from nitronb.presign import (PresignedURL, credentials_json, error_from_response,  # noqa: F401
                             presign_download, presign_upload, split_url, url_from_credentials)

LOCAL_PROFILE = "local"
MiB = 1024 * 1024
#: objects at least this big are sent as multipart uploads
MULTIPART_THRESHOLD = 16 * MiB
#: the part size of multipart uploads (grown for very large files: S3 allows 10,000 parts)
PART_SIZE = 8 * MiB
#: parts in flight at once
CONCURRENCY = 4
_CHUNK = 1 * MiB
_MAX_PARTS = 10000
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")


# --- paths ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class S3Dir:
    """An S3 "directory": a bucket and a key prefix (empty, or ending with ``/``)."""

    bucket: str
    prefix: str = ""

    def key(self, name: str) -> str:
        """The object key of ``name`` in this directory."""
        if not name or name.startswith("/"):
            raise BadS3PathError(f"object name {name!r} must be non-empty and relative.",
                                 hint="Give a name such as conditions.csv.enc.")
        return self.prefix + name

    def uri(self, name: str | None = None) -> str:
        """``s3://bucket/prefix/`` or, with ``name``, the object's URI."""
        return f"s3://{self.bucket}/{self.prefix if name is None else self.key(name)}"

    def __str__(self) -> str:
        return self.uri()


def parse_s3_dir(text: str | S3Dir) -> S3Dir:
    """Parse ``s3://bucket`` or ``s3://bucket/prefix[/]`` into an :class:`S3Dir`."""
    if isinstance(text, S3Dir):
        return text
    bucket, key = _split_s3(text, what="S3 directory")
    prefix = key.strip("/")
    return S3Dir(bucket, prefix + "/" if prefix else "")


def parse_s3_uri(text: str) -> tuple[str, str]:
    """Parse ``s3://bucket/key`` into ``(bucket, key)``; the key must name an object."""
    bucket, key = _split_s3(text, what="S3 object URI")
    if not key or key.endswith("/"):
        raise BadS3PathError(f"{text!r} names a directory, not an object.",
                             hint="Write s3://BUCKET/PATH/OBJECT.", url=text)
    return bucket, key


def _split_s3(text: str, *, what: str) -> tuple[str, str]:
    if not isinstance(text, str) or not text.startswith("s3://"):
        raise BadS3PathError(f"{text!r} is not an {what}: it must start with s3://.",
                             hint="Write s3://BUCKET/PREFIX/.", url=str(text))
    bucket, _, key = text[len("s3://"):].partition("/")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise BadS3PathError(
            f"{bucket!r} in {text!r} is not a valid bucket name (3–63 characters: lower-case "
            "letters, digits, '.', '-'; starting and ending with a letter or digit).",
            hint="Check the bucket name.", url=text)
    return bucket, key


def _target(s3dir_or_uri: str | S3Dir, path: Path, key_name: str | None) -> tuple[str, str]:
    """(bucket, key) of an upload: a directory (trailing ``/``, bucket only, or ``key_name``
    given) receives the object under ``key_name`` or the file's name; otherwise the URI names
    the object itself."""
    if isinstance(s3dir_or_uri, S3Dir):
        return s3dir_or_uri.bucket, s3dir_or_uri.key(key_name or path.name)
    bucket, key = _split_s3(s3dir_or_uri, what="S3 directory or object URI")
    if key_name is not None or not key or key.endswith("/"):
        return bucket, parse_s3_dir(s3dir_or_uri).key(key_name or path.name)
    return bucket, key


# --- clients --------------------------------------------------------------------------------


def client_for(profile: str = LOCAL_PROFILE, *, endpoint_url: str | None = None,
               workspace: str | os.PathLike[str] | None = None, region: str | None = None,
               signature_version: str = "s3v4") -> Any:
    """A boto3 S3 client for ``profile`` (``local`` = the embedded endpoint).

    ``signature_version`` is ``s3v4`` (SigV4) or ``s3`` (the legacy query form of presigned URLs).
    """
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    s3_options: dict[str, Any] = {}
    if profile == LOCAL_PROFILE:
        from nitronb import local
        from nitronb.s3gate import load_credentials
        from nitronb.workspace import workspace_dir

        ws = workspace_dir(workspace)
        if endpoint_url is None:
            try:
                endpoint_url = local.url("s3", ws)
            except LocalStackError:
                raise EndpointUnreachableError(
                    "the local S3 endpoint is not running.",
                    hint="Start it with `nitronb local up`.") from None
        creds = load_credentials(ws)
        session = boto3.session.Session(aws_access_key_id=creds["access_key_id"],
                                        aws_secret_access_key=creds["secret_access_key"],
                                        region_name=region or creds["region"])
        s3_options["addressing_style"] = "path"
    else:
        try:
            session = boto3.session.Session(profile_name=profile, region_name=region)
        except botocore.exceptions.ProfileNotFound:
            raise CredentialsMissingError(
                f"there is no AWS profile named {profile!r}.",
                hint="Create it with `aws configure --profile NAME`, or use the profile local "
                     "for the embedded endpoint.") from None
        if session.get_credentials() is None:
            raise CredentialsMissingError(
                f"the AWS profile {profile!r} has no credentials.",
                hint=f"Run `aws configure --profile {profile}` (or `aws sso login`).")
        if endpoint_url is not None:
            s3_options["addressing_style"] = "path"
    config = Config(signature_version=signature_version, s3=s3_options or None,
                    retries={"max_attempts": 3, "mode": "standard"},
                    max_pool_connections=max(10, CONCURRENCY * 2))
    client = session.client("s3", endpoint_url=endpoint_url, config=config)
    client.meta.nitronb_profile = profile  # type: ignore[attr-defined]
    return client


def _describe_profile(profile: str) -> str:
    return "the local endpoint" if profile == LOCAL_PROFILE else f"profile {profile!r}"


def storage_error(exc: BaseException, *, bucket: str | None = None, key: str | None = None,
                  profile: str = LOCAL_PROFILE) -> StorageError:
    """The :class:`~nitronb.errors.StorageError` (with what to do) for a botocore failure."""
    import botocore.exceptions as bce

    where = f"s3://{bucket}/{key or ''}" if bucket else "the store"
    if isinstance(exc, StorageError):
        return exc
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return CredentialsMissingError(f"no credentials for {_describe_profile(profile)}.",
                                       hint="Configure the profile (`aws configure`).")
    if isinstance(exc, (bce.EndpointConnectionError, bce.ConnectionClosedError,
                        bce.ConnectTimeoutError, bce.ReadTimeoutError)):
        hint = ("Start it with `nitronb local up`." if profile == LOCAL_PROFILE
                else "Check the network and the endpoint URL.")
        return EndpointUnreachableError(f"the object store does not answer ({exc}).", hint=hint)
    if isinstance(exc, bce.ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        message = str(error.get("Message", ""))
        if code == "NoSuchBucket":
            return NoSuchBucketError(f"the bucket {bucket!r} does not exist.", url=where,
                                     hint="Check the S3 directory, or create the bucket.")
        if code in ("NoSuchKey", "404", "NotFound"):
            return NoSuchObjectError(f"there is no object {where}.", url=where,
                                     hint="Check the object name and directory (upload it first?).")
        if code == "AccessDenied" and "expired" in message.lower():
            return PresignedURLExpiredError(f"the request to {where} has expired.", url=where,
                                            hint="Presign a new URL.")
        if code == "SignatureDoesNotMatch":
            return SignatureMismatchError(
                f"the store rejected the signature of the request to {where}.", url=where,
                hint=f"Check the secret key of {_describe_profile(profile)}.")
        if code in ("InvalidAccessKeyId", "ExpiredToken", "InvalidToken"):
            return CredentialsMissingError(
                f"the store does not accept the credentials of {_describe_profile(profile)} "
                f"({code}).", hint="Refresh or reconfigure the profile's credentials.")
        return StorageError(f"{code or 'error'} on {where}: {message or exc}", url=where)
    return StorageError(f"transfer with {where} failed: {exc}", url=where)


def _call(fn: Callable[..., Any], *, bucket: str, key: str | None, profile: str,
          **kwargs: Any) -> Any:
    import botocore.exceptions as bce

    try:
        return fn(**kwargs)
    except (bce.BotoCoreError, bce.ClientError) as exc:
        raise storage_error(exc, bucket=bucket, key=key, profile=profile) from exc


def _resolve(client: Any, profile: str, endpoint_url: str | None,
             workspace: str | os.PathLike[str] | None) -> tuple[Any, str]:
    if client is not None:
        return client, getattr(client.meta, "nitronb_profile", profile)
    return client_for(profile, endpoint_url=endpoint_url, workspace=workspace), profile


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
    with open(source, "rb") as fh, progress_bar(size, f"upload {source.name}",
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


def delete_object(s3uri: str, *, profile: str = LOCAL_PROFILE, endpoint_url: str | None = None,
                  workspace: str | os.PathLike[str] | None = None, client: Any = None) -> None:
    """Delete an object (no error if it does not exist)."""
    bucket, key = parse_s3_uri(s3uri)
    client, profile = _resolve(client, profile, endpoint_url, workspace)
    _call(client.delete_object, bucket=bucket, key=key, profile=profile, Bucket=bucket, Key=key)


__all__ = [
    "S3Dir", "parse_s3_dir", "parse_s3_uri", "client_for", "storage_error", "upload_file",
    "download_file", "delete_object", "PresignedURL", "presign_download", "presign_upload",
    "split_url", "credentials_json", "url_from_credentials", "error_from_response",
]

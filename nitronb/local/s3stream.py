"""The local S3 endpoint's data path: object bodies stream between the socket and files.

For the requests that carry an object's bytes (PutObject, UploadPart, GetObject, and CopyObject,
which carries none), the gate (:mod:`nitronb.local.s3gate`) hands moto the request without its bytes
and streams them itself, through :mod:`nitronb.local.s3files`:

- an upload's body (plain, or ``aws-chunked`` with its trailers) is written to a new file under
  the scratch folder while its MD5 and checksum are computed, checked against the request's
  digests, then moto gets the request with an empty body and builds the object from that file
  (the store then links the file into its data folder: written once, never copied);
- a download is answered as moto answers it (status, headers, conditions, errors), its bytes
  (or the requested range) read from the object's files in pieces of :data:`PIECE` bytes;
- a HeadObject is moto's answer, its checksum headers those of moto's GetObject (moto's HEAD
  leaves out a composite checksum's part count and ``x-amz-checksum-type``).

Whatever else a request asks (buckets, listings, tags, ACLs …) goes to moto unchanged.
"""

from __future__ import annotations

import base64
import hashlib
import io
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator
from urllib.parse import parse_qsl, urlsplit

from nitronb.local.s3digest import CHECKSUMS, BodyMismatch, Rejection
from nitronb.local.s3files import FileValue, new_checksum, new_file, receiving, serving, write_all

#: bytes read from a request or sent in a response at a time
PIECE = 256 * 1024
#: query parameters that name no sub-resource (authentication, response overrides, versions)
_NEUTRAL = {"x-id", "versionId", "AWSAccessKeyId", "Signature", "Expires"}
_PART = {"uploadId", "partNumber"}


def scratch_dir(data_root: Path) -> Path:
    """Where bodies being received and parts of unfinished uploads wait (beside the data
    folder ``data_root``, on the same disk; emptied when the endpoint starts)."""
    return Path(data_root).parent / "s3-uploads"


def route(method: str, host: str, raw_path: str, query: list[tuple[str, str]],
          headers: dict[str, str]) -> str | None:
    """Which streamed operation a path-style request is: ``"get"``, ``"head"``, ``"put"``,
    ``"part"``, ``"copy"``, or None (moto answers it as it is)."""
    hostname = urlsplit(f"http://{host}/").hostname or ""
    if hostname not in ("localhost", "::1") and not hostname.replace(".", "").isdigit():
        return None  # a bucket may be named in the host: moto decides
    bucket, _, key = raw_path.lstrip("/").partition("/")
    if not bucket or not key:
        return None
    names = {n for n, _ in query if not (n.startswith("X-Amz-") or n.startswith("response-"))}
    copy = "x-amz-copy-source" in headers
    if method == "GET" and names <= _NEUTRAL | {"partNumber"}:
        return "get"
    if method == "HEAD" and names <= _NEUTRAL | {"partNumber"}:
        return "head"
    if method == "PUT" and names <= _NEUTRAL:
        return "copy" if copy else "put"
    if method == "PUT" and not copy and _PART <= names <= _NEUTRAL | _PART:
        return "part"
    return None


class StreamedObjects:
    """The gate's data path for one moto S3 ``app``, receiving bodies under ``scratch``;
    ``live_uploads()`` gives the ids of the multipart uploads moto has open."""

    def __init__(self, app: Callable, scratch: Path, live_uploads: Callable[[], set[str]]
                 ) -> None:
        self._app = app
        self.scratch = Path(scratch)
        self._live_uploads = live_uploads
        self._completing = threading.Lock()

    # --- uploads ------------------------------------------------------------------------------

    def receive(self, environ: dict[str, Any], start_response: Callable, kind: str,
                query: list[tuple[str, str]], headers: dict[str, str]) -> Iterable[bytes]:
        """Stream the request body into a scratch file, then let moto build the object (or
        part) from it; the file is removed unless moto took it."""
        upload = next((v for n, v in query if n == "uploadId"), "")
        if kind == "part" and upload not in self._live_uploads():  # moto would fail (500)
            raise _no_such_upload(upload)
        folder = self.upload_dir(upload) if kind == "part" else self.scratch / "put"
        self.scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        path = folder / f"{secrets.token_hex(8)}.bin"
        environ["nitronb.received"] = path
        value, checksum = _write_body(environ, headers, path)
        try:
            moto_environ = _without_body(environ, headers, checksum)
            with receiving(value) as handover:
                body = self._app(moto_environ, start_response)
            if handover.key is None:
                path.unlink(missing_ok=True)
            return body
        except KeyError:  # the upload finished while this part's body was received
            path.unlink(missing_ok=True)
            if kind == "part" and upload not in self._live_uploads():
                raise _no_such_upload(upload) from None
            raise
        except BaseException:
            path.unlink(missing_ok=True)
            raise

    def upload_dir(self, upload_id: str) -> Path:
        """The scratch folder of a multipart upload's parts."""
        return self.scratch / hashlib.sha256(upload_id.encode("utf-8", "surrogatepass")
                                             ).hexdigest()[:32]

    def finished(self, environ: dict[str, Any], query: list[tuple[str, str]]) -> None:
        """After a request: drop its received body (the store linked what it keeps) and the
        parts of an upload that no longer exists (completed or aborted)."""
        received = environ.get("nitronb.received")
        if received is not None and received.parent.name == "put":
            received.unlink(missing_ok=True)
        upload = next((v for n, v in query if n == "uploadId"), None)
        if upload is not None and upload not in self._live_uploads():
            shutil.rmtree(self.upload_dir(upload), ignore_errors=True)

    def complete(self, environ: dict[str, Any], start_response: Callable,
                 query: list[tuple[str, str]]) -> Iterable[bytes]:
        """A CompleteMultipartUpload, one at a time (two completes of one upload would both
        build the object); NoSuchUpload (404) when the upload is gone (moto fails with 500)."""
        upload = next((v for n, v in query if n == "uploadId"), "")
        with self._completing:
            if upload not in self._live_uploads():
                raise _no_such_upload(upload)
            return self._app(environ, start_response)

    # --- copies ---------------------------------------------------------------------------

    def copy(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        """A CopyObject: moto copies the source key's files (as a list, not their bytes)."""
        with serving(lend=True):
            return self._app(environ, start_response)

    # --- downloads ------------------------------------------------------------------------

    def head(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        """A HeadObject answered by moto; when it gives the object's checksum, the
        ``x-amz-checksum-*`` headers are those moto's GetObject gives for the same request (with
        a composite checksum's part count and ``x-amz-checksum-type``, as S3 answers HEAD)."""
        status, headers, content, _ = self._ask(environ)
        plain = "HTTP_RANGE" not in environ and _part_number(environ) is None
        if status[:3] == "200" and plain and any(_is_checksum(k) for k, _ in headers):
            got_status, got_headers, _, _ = self._ask({**environ, "REQUEST_METHOD": "GET"})
            if got_status[:3] == "200":
                headers = [(k, v) for k, v in headers if not _is_checksum(k)] + [
                    (k, v) for k, v in got_headers if _is_checksum(k)]
        start_response(status, headers)
        return [content]

    def _ask(self, environ: dict[str, Any]
             ) -> tuple[str, list[tuple[str, str]], bytes, FileValue | None]:
        """moto's answer (status, headers, body) to a request that reads an object, and the
        object's :class:`FileValue` when it is kept in files (whose bytes are not read)."""
        answer: dict[str, Any] = {}

        def hold(status: str, headers: list, exc_info: Any = None) -> Callable:
            answer.update(status=status, headers=headers)
            return lambda data: None

        with serving() as handover:
            body = self._app(environ, hold)
            try:
                content = b"".join(body)
            finally:
                if hasattr(body, "close"):
                    body.close()
        return answer["status"], answer["headers"], content, handover.value

    def serve(self, environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
        """A GetObject answered as moto answers it, the bytes streamed from the files."""
        wanted = environ.get("HTTP_RANGE", "")
        moto_environ = {k: v for k, v in environ.items() if k != "HTTP_RANGE"}
        part = _part_number(environ)
        for attempt in (1, 2):
            status, headers, content, value = self._ask(moto_environ)
            source: Any = value if value is not None else content
            if status[:3] == "200" and part and isinstance(source, FileValue):
                try:
                    status, headers, span = _part_of(int(part), headers, source)
                except Rejection as rejection:
                    raise BodyMismatch(rejection.status, rejection.code, rejection.message,
                                       rejection.extra) from None
            elif status[:3] == "200" and wanted:
                try:
                    status, headers, span = _ranged(wanted, headers, _size(source))
                except Rejection as rejection:
                    raise BodyMismatch(rejection.status, rejection.code, rejection.message,
                                       rejection.extra) from None
            else:
                span = (0, _size(source))
            if value is None:
                pieces: Iterable[bytes] = [content[span[0]:span[1]]]
            else:
                try:
                    pieces = _Pieces(value, *span)
                except FileNotFoundError:
                    if attempt == 2:
                        raise
                    continue  # replaced while being read: answer the new object
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(span[1] - span[0])))
            start_response(status, headers)
            return pieces
        raise AssertionError("unreachable")


def _part_number(environ: dict[str, Any]) -> str | None:
    """The request's ``partNumber`` query parameter when it is a number, else None."""
    return next((v for n, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)
                 if n == "partNumber" and v.isdigit()), None)


def _is_checksum(header: str) -> bool:
    return header.lower().startswith("x-amz-checksum-")


def _part_of(number: int, headers: list[tuple[str, str]], value: FileValue
             ) -> tuple[str, list[tuple[str, str]], tuple[int, int]]:
    """The answer to a GET with ``partNumber`` of a multipart object (its ETag ends in ``-N``,
    one file a part), which moto answers with the whole object; others unchanged."""
    etag = next((v for k, v in headers if k.lower() == "etag"), "").strip('"')
    count = etag.rpartition("-")[2]
    whole = ("200 OK", headers, (0, value.size))
    if "-" not in etag or not count.isdigit() or int(count) != len(value.segments):
        return whole
    if not 1 <= number <= int(count):
        raise Rejection(416, "InvalidPartNumber", "The requested partnumber is not "
                        "satisfiable", {"PartNumberRequested": str(number),
                                        "ActualPartCount": count})
    begin = sum(n for _, n in value.segments[:number - 1])
    end = begin + value.segments[number - 1][1]
    headers = [(k, v) for k, v in headers if not k.lower().startswith("x-amz-checksum-")]
    headers += [("x-amz-mp-parts-count", count)]
    if end > begin:
        headers += [("Content-Range", f"bytes {begin}-{end - 1}/{value.size}")]
    return "206 Partial Content", headers, (begin, end)


def _no_such_upload(upload: str) -> BodyMismatch:
    return BodyMismatch(404, "NoSuchUpload", "The specified upload does not exist. The upload ID "
                        "may be invalid, or the upload may have been aborted or completed.",
                        {"UploadId": upload})


def _size(source: Any) -> int:
    return source.size if isinstance(source, FileValue) else len(source)


class _Pieces:
    """The bytes ``[start, end)`` of a :class:`FileValue`, its files opened at once."""

    def __init__(self, value: FileValue, start: int, end: int) -> None:
        self._opened = value.opened(start, end, PIECE)
        self._iterator = self._opened.__enter__()

    def __iter__(self) -> Iterator[bytes]:
        return self._iterator

    def close(self) -> None:
        self._opened.__exit__(None, None, None)


def _ranged(wanted: str, headers: list[tuple[str, str]], length: int
            ) -> tuple[str, list[tuple[str, str]], tuple[int, int]]:
    """The answer to a ``Range`` (one ``bytes=`` range, as moto reads it): status, headers and
    span; a range S3 would ignore gives the whole object."""
    whole = ("200 OK", headers, (0, length))
    unit, _, spec = wanted.partition("=")
    if "," in spec or not _:
        return whole
    try:
        begin, end = [int(i) if i else None for i in spec.split("-")]
    except ValueError:
        return whole
    last = length - 1
    if (begin is None and end == 0) or (begin is not None and begin > last):
        raise Rejection(416, "InvalidRange", "The requested range is not satisfiable",
                        {"RangeRequested": wanted, "ActualObjectSize": str(length)})
    if begin is not None:
        end = last if end is None else min(end, last)
    elif end is not None:
        begin, end = length - min(end, length), last
    else:
        return whole
    if begin > min(end, last):
        return whole
    if begin or end < last:  # a part of the object: its checksum is not the object's
        headers = [(k, v) for k, v in headers if not k.lower().startswith("x-amz-checksum-")]
    headers = headers + [("Content-Range", f"bytes {begin}-{end}/{length}")]
    return "206 Partial Content", headers, (begin, end + 1)


# --- receiving a body -----------------------------------------------------------------------


def _write_body(environ: dict[str, Any], headers: dict[str, str], path: Path
                ) -> tuple[FileValue, tuple[str, str] | None]:
    """Write the request body to ``path``; its :class:`FileValue` and the checksum moto must
    record (``(algorithm, base64)``, or None). Raises :class:`BodyMismatch` when an
    ``aws-chunked`` body does not match its digests (a plain one is checked as it is read)."""
    chunked = "aws-chunked" in headers.get("content-encoding", "") or headers.get(
        "x-amz-content-sha256", "").startswith("STREAMING-")
    stream = environ["wsgi.input"]
    source = _AwsChunked(stream) if chunked else stream
    try:
        remaining: int | None = None if chunked else int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        remaining = None
    if not chunked and not environ.get("CONTENT_LENGTH") and "chunked" in environ.get(
            "HTTP_TRANSFER_ENCODING", "").lower():  # as S3: never stored as an empty object
        raise BodyMismatch(411, "MissingContentLength",
                           "You must provide the Content-Length HTTP header.")
    if remaining is None and not chunked and not environ.get("wsgi.input_terminated"):
        remaining = 0
    algorithm = headers.get("x-amz-sdk-checksum-algorithm", "").upper()
    md5 = hashlib.md5(usedforsecurity=False)
    digests = {algorithm: new_checksum(algorithm)} if algorithm else {}
    if chunked:  # the digests its headers or trailers declare, checked here
        declared = " ".join(headers).lower() + " " + headers.get("x-amz-trailer", "").lower()
        for lower, (name, _, _) in CHECKSUMS.items():
            if f"x-amz-checksum-{lower}" in declared:
                digests.setdefault(name, new_checksum(name))
    size = 0
    with new_file(path) as fd:
        while remaining is None or remaining > 0:
            data = source.read(PIECE if remaining is None else min(PIECE, remaining))
            if not data:
                if remaining:
                    raise BodyMismatch(400, "IncompleteBody", "You did not provide the number "
                                       "of bytes specified by the Content-Length HTTP header.")
                break
            md5.update(data)
            for digest in digests.values():
                digest.update(data)
            write_all(fd, data)
            size += len(data)
            if remaining is not None:
                remaining -= len(data)
        raw = {name: digest.digest() for name, digest in digests.items()}
        if chunked:
            _check_chunked(headers, source.trailers, md5.digest(), raw, size, path)
    value = FileValue([(path, size)], md5.hexdigest(), {algorithm: raw[algorithm]}
                      if algorithm else {})
    checksum = None
    if algorithm:
        given = headers.get(f"x-amz-checksum-{algorithm.lower()}") or (
            source.trailers.get(f"x-amz-checksum-{algorithm.lower()}") if chunked else None)
        checksum = (algorithm, given or base64.b64encode(raw[algorithm]).decode())
    return value, checksum


def _check_chunked(headers: dict[str, str], trailers: dict[str, str], md5: bytes,
                   raw: dict[str, bytes], size: int, path: Path) -> None:
    declared = headers.get("x-amz-decoded-content-length")
    if declared is not None and declared.isdigit() and int(declared) != size:
        raise BodyMismatch(400, "IncompleteBody", "The decoded body is not "
                           "x-amz-decoded-content-length bytes long.")
    given_md5 = headers.get("content-md5")
    if given_md5 is not None and _b64(given_md5) != md5:
        raise BodyMismatch(400, "BadDigest", "The Content-MD5 you specified did not match "
                           "what was received.", {"ExpectedDigest": md5.hex()})
    for lower, (name, _, _) in CHECKSUMS.items():
        given = headers.get(f"x-amz-checksum-{lower}") or trailers.get(f"x-amz-checksum-{lower}")
        if given is not None and name in raw and _b64(given) != raw[name]:
            raise BodyMismatch(400, "BadDigest", f"The {name} you specified did not match the "
                               "calculated checksum.")


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except ValueError:
        return None


class _AwsChunked:
    """The payload of an ``aws-chunked`` body (``size[;chunk-signature=…]`` lines, each chunk
    followed by CRLF, a zero-size chunk, then trailer lines); ``trailers`` once read to its end
    (lower-case names). Reads its source in pieces of :data:`PIECE` bytes."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._left = 0
        self._done = False
        self.trailers: dict[str, str] = {}

    def _more(self) -> None:
        data = self._stream.read(PIECE)
        if not data:
            raise BodyMismatch(400, "IncompleteBody", "The aws-chunked body ended early.")
        self._buffer += data

    def _line(self) -> bytes:
        while (end := self._buffer.find(b"\n")) < 0:
            if len(self._buffer) > 8192:
                raise BodyMismatch(400, "InvalidRequest", "An aws-chunked line is too long.")
            self._more()
        line = bytes(self._buffer[:end + 1])
        del self._buffer[:end + 1]
        return line.strip()

    def read(self, size: int) -> bytes:
        if self._done:
            return b""
        if self._left == 0:
            head = self._line()
            try:
                self._left = int(head.split(b";", 1)[0], 16)
            except ValueError:
                raise BodyMismatch(400, "InvalidRequest", "The aws-chunked body is not "
                                   "framed as chunks.") from None
            if self._left == 0:
                while line := self._line():
                    name, _, value = line.decode("latin-1").partition(":")
                    self.trailers[name.strip().lower()] = value.strip()
                self._done = True
                return b""
        if not self._buffer:
            self._more()
        count = min(size, self._left, len(self._buffer))
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        self._left -= count
        if self._left == 0:
            self._line()  # the CRLF that ends the chunk
        return data


def _without_body(environ: dict[str, Any], headers: dict[str, str],
                  checksum: tuple[str, str] | None) -> dict[str, Any]:
    """The request as moto gets it: no body, no body framing, the checksum to record."""
    moto = dict(environ)
    moto["CONTENT_LENGTH"] = "0"
    moto["wsgi.input"] = io.BytesIO(b"")
    moto["HTTP_X_AMZ_CONTENT_SHA256"] = "UNSIGNED-PAYLOAD"
    for name in ("HTTP_X_AMZ_DECODED_CONTENT_LENGTH", "HTTP_X_AMZ_TRAILER"):
        moto.pop(name, None)
    encoding = [e for e in headers.get("content-encoding", "").split(",")
                if e.strip() and e.strip() != "aws-chunked"]
    if encoding:
        moto["HTTP_CONTENT_ENCODING"] = ",".join(encoding)
    else:
        moto.pop("HTTP_CONTENT_ENCODING", None)
    if checksum is not None:
        moto["HTTP_X_AMZ_CHECKSUM_" + checksum[0].upper()] = checksum[1]
    return moto

"""What a request body must hash to, and a reader that checks it as the body streams through:
the ``Content-MD5``, ``x-amz-checksum-*`` and hex ``x-amz-content-sha256`` headers S3 checks,
refused with S3's errors (``BadDigest``, ``XAmzContentSHA256Mismatch`` …). Used by
:mod:`nitronb.local.s3gate`."""

from __future__ import annotations

import base64
import binascii
import hashlib
import string
from dataclasses import dataclass
from typing import Any, Callable

import crc32c
from botocore import httpchecksum
from botocore.compat import HAS_CRT


@dataclass
class Rejection(Exception):
    """A request the gate refuses, with the S3 error it answers."""

    status: int
    code: str
    message: str
    extra: dict[str, str] | None = None



class BodyMismatch(Rejection):
    """Raised by :class:`VerifyingInput` at the end of a body its integrity headers do not match."""


#: the S3 checksum algorithms the gate computes, by the lowercase name of their
#: ``x-amz-checksum-*`` header: S3's name, the digest's size in bytes and an incremental class
#: (``update(bytes-like)``, ``digest()``, big-endian for the CRCs): botocore's, with which boto3
#: computes the header, and for CRC32C the crc32c package's, which moto uses. CRC64NVME is
#: computed by awscrt, and is here only where awscrt is installed (``boto3[crt]``); without it,
#: an ``x-amz-checksum-crc64nvme`` header is stored as given, unchecked
CHECKSUMS: dict[str, tuple[str, int, Callable[[], Any]]] = {
    "crc32": ("CRC32", 4, httpchecksum.Crc32Checksum),
    "crc32c": ("CRC32C", 4, crc32c.CRC32CHash),
    "sha1": ("SHA1", 20, httpchecksum.Sha1Checksum),
    "sha256": ("SHA256", 32, httpchecksum.Sha256Checksum),
}
if HAS_CRT and hasattr(httpchecksum.crt_checksums, "crc64nvme"):  # awscrt 0.23.4 and newer
    CHECKSUMS["crc64nvme"] = ("CRC64NVME", 8, httpchecksum.CrtCrc64NvmeChecksum)


def new_checksum(algorithm: str) -> Any:
    """An incremental digest (``update(bytes-like)``, ``digest() -> bytes``, big-endian for the
    CRCs) of ``algorithm``: ``"md5"`` or a key of :data:`CHECKSUMS`, in any case.

    Raises KeyError for any other name."""
    name = algorithm.lower()
    if name == "md5":
        return hashlib.md5(usedforsecurity=False)
    return CHECKSUMS[name][2]()


@dataclass
class _Expectation:
    algorithm: str
    expected: bytes
    rejection: Rejection


def _expectations(headers: dict[str, str]) -> list[_Expectation]:
    """What the body must hash to, from the headers S3 checks it against (Rejection if one of
    them is malformed)."""
    found = []
    declared = headers.get("x-amz-content-sha256", "")
    if len(declared) == 64 and all(c in string.hexdigits for c in declared):
        found.append(_Expectation("sha256", bytes.fromhex(declared), Rejection(
            400, "XAmzContentSHA256Mismatch", "The provided 'x-amz-content-sha256' header does "
            "not match what was computed.", {"ClientComputedContentSHA256": declared.lower()})))
    elif declared and declared != "UNSIGNED-PAYLOAD" and not declared.startswith("STREAMING-"):
        raise Rejection(400, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, "
                        "STREAMING-… or the hex SHA-256 of the body.",
                        {"ArgumentName": "x-amz-content-sha256", "ArgumentValue": declared})
    # an aws-chunked body is framed: its MD5 and checksums are those of the decoded bytes,
    # checked by the data path (nitronb.local.s3stream) as it decodes them
    if declared.startswith("STREAMING-") or "aws-chunked" in headers.get(
            "content-encoding", ""):
        return found
    md5 = headers.get("content-md5")
    if md5 is not None:
        value = _b64(md5, 16)
        if value is None:
            raise Rejection(400, "InvalidDigest", "The Content-MD5 you specified was invalid.",
                            {"Content-MD5": md5})
        found.append(_Expectation("md5", value, Rejection(
            400, "BadDigest", "The Content-MD5 you specified did not match what was received.",
            {"ExpectedDigest": value.hex()})))
    for algorithm, (name, size, _) in CHECKSUMS.items():
        text = headers.get(f"x-amz-checksum-{algorithm}")
        if text is None:
            continue
        value = _b64(text, size)
        if value is None:
            raise Rejection(400, "InvalidRequest",
                            f"Value for x-amz-checksum-{algorithm} header is invalid.")
        found.append(_Expectation(algorithm, value, Rejection(
            400, "BadDigest", f"The {name} you specified did not match the calculated "
            "checksum.")))
    return found


def _b64(text: str, size: int) -> bytes | None:
    try:
        value = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    return value if len(value) == size else None


class VerifyingInput:
    """A request body (``wsgi.input``) that hashes the bytes as they are read and, on reading
    its last byte, raises :class:`BodyMismatch` if they do not match what their headers say,
    before the reader can act on them."""

    def __init__(self, stream: Any, expectations: list[_Expectation], length: int | None):
        self._stream = stream
        self._expectations = expectations
        self._digests = {e.algorithm: new_checksum(e.algorithm) for e in expectations}
        self._remaining = length
        #: whether the whole body has been read (and checked)
        self.finished = False
        #: the refusal, once the body is known not to match
        self.rejection: Rejection | None = None
        if length == 0:
            self._finish()

    def _seen(self, data: Any, to_end: bool) -> None:
        for digest in self._digests.values():
            digest.update(data)
        if self._remaining is not None:
            self._remaining -= len(data)
            to_end = self._remaining <= 0
        if to_end and not self.finished:
            self._finish()

    def _finish(self) -> None:
        self.finished = True
        for expectation in self._expectations:
            if self._digests[expectation.algorithm].digest() != expectation.expected:
                found = expectation.rejection
                self.rejection = BodyMismatch(found.status, found.code, found.message,
                                              found.extra)
                raise self.rejection

    def _check_open(self) -> None:
        if self.rejection is not None:
            raise self.rejection

    def read(self, size: int | None = -1) -> bytes:
        self._check_open()
        whole = size is None or size < 0
        data = self._stream.read() if whole else self._stream.read(size)
        self._seen(data, whole or (size > 0 and not data))
        return data

    def readinto(self, buffer: Any) -> int:
        self._check_open()
        if hasattr(self._stream, "readinto"):
            count = self._stream.readinto(buffer) or 0
        else:
            data = self._stream.read(len(buffer))
            count = len(data)
            buffer[:count] = data
        self._seen(memoryview(buffer)[:count], len(buffer) > 0 and count == 0)
        return count

    def readline(self, size: int | None = -1) -> bytes:
        self._check_open()
        data = self._stream.readline() if size is None or size < 0 else \
            self._stream.readline(size)
        self._seen(data, not data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        if hasattr(self._stream, "close"):
            self._stream.close()


def verifying_input(environ: dict[str, Any], headers: dict[str, str]) -> VerifyingInput | None:
    """Put a :class:`VerifyingInput` in ``environ`` if the request's headers say what its body
    hashes to (raises the Rejection at once for an empty or malformed one)."""
    expectations = _expectations(headers)
    if not expectations:
        return None
    try:
        length: int | None = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        length = None
    if length is None and not environ.get("wsgi.input_terminated"):
        length = 0  # no length and no chunked framing: the body is empty (as werkzeug reads it)
    reader = VerifyingInput(environ["wsgi.input"], expectations, length)
    environ["wsgi.input"] = reader
    return reader

"""Objects of the local S3 endpoint kept in files, never whole in memory.

moto keeps each object's bytes in a buffer of its own (``FakeKey._value_buffer``). Here that
buffer is a :class:`FileValue`: the object's data files in the store (one file, or one per part
of a multipart object), read in pieces when asked. :func:`install` teaches moto three things,
each acting only on what this module hands it, so that moto goes on deciding everything about
a request (headers, conditions, errors, metadata, tags, versions) while the bytes stay on disk:

- a key built from an empty body while :func:`receiving` holds a file takes that file as its
  bytes (the gate streamed the request body into it before moto saw the request);
- a key whose bytes are asked for while :func:`serving` is active hands over its
  :class:`FileValue` and answers no bytes (the gate streams them from the files);
- completing a multipart upload whose parts are files assembles no bytes: the object is the
  list of its parts' files, its ETag and checksum computed from what the parts recorded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

from nitronb.local import s3digest

_CHUNK = 1 << 20
_local = threading.local()


class FileValue:
    """An object's bytes as a sequence of files (``segments``: ``(path, size)`` in order);
    ``md5`` the hex MD5 of the bytes when known, ``checksums`` raw digests by S3 algorithm
    name (``"CRC32"`` …). Offers the file API moto uses on its buffers; never changed in place."""

    def __init__(self, segments: list[tuple[Path, int]], md5: str | None = None,
                 checksums: dict[str, bytes] | None = None) -> None:
        self.segments = [(Path(p), int(n)) for p, n in segments]
        self.size = sum(n for _, n in self.segments)
        self.md5 = md5
        self.checksums = dict(checksums or {})
        self._position = 0

    def names_in(self, folder: Path) -> list[str] | None:
        """The segment file names if every segment lives in ``folder``, else None."""
        if all(p.parent == folder for p, _ in self.segments):
            return [p.name for p, _ in self.segments]
        return None

    # --- the buffer API moto calls (seek, read, close) --------------------------------------

    def seek(self, offset: int, whence: int = 0) -> int:
        self._position = offset if whence == 0 else (
            self._position + offset if whence == 1 else self.size + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def read(self, size: int | None = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self._position + size)
        data = b"".join(self.pieces(self._position, end))
        self._position += len(data)
        return data

    def truncate(self, size: int | None = None) -> int:
        raise OSError(errno.EROFS, "a stored object's bytes are never changed in place")

    def write(self, data: bytes) -> int:
        raise OSError(errno.EROFS, "a stored object's bytes are never changed in place")

    def close(self) -> None:
        """Nothing to release: the files belong to the store."""

    # --- reading ----------------------------------------------------------------------------

    def pieces(self, start: int, end: int, chunk: int = _CHUNK) -> Iterator[bytes]:
        """The bytes ``[start, end)`` in pieces of at most ``chunk`` bytes."""
        with self.opened(start, end) as reader:
            yield from reader

    @contextlib.contextmanager
    def opened(self, start: int, end: int, chunk: int = _CHUNK) -> Iterator[Iterator[bytes]]:
        """Open (now) the files holding ``[start, end)``; yield an iterator of its pieces."""
        fds: list[tuple[int, int, int]] = []  # fd, offset in the file, bytes from it
        try:
            offset = 0
            for path, size in self.segments:
                low, high = max(start, offset), min(end, offset + size)
                if low < high:
                    fds.append((os.open(path, os.O_RDONLY), low - offset, high - low))
                offset += size
            yield _read_spans(fds, chunk)
        finally:
            for fd, _, _ in fds:
                os.close(fd)


def _read_spans(spans: list[tuple[int, int, int]], chunk: int) -> Iterator[bytes]:
    for fd, offset, length in spans:
        while length > 0:
            data = os.pread(fd, min(chunk, length), offset)
            if not data:
                raise OSError(errno.EIO, "a stored object's file is shorter than recorded")
            offset += len(data)
            length -= len(data)
            yield data


# --- writing files --------------------------------------------------------------------------


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def new_file(path: Path) -> Iterator[int]:
    """A file descriptor of a new private file that becomes ``path`` (fsynced) if the block
    ends normally; nothing is left behind otherwise."""
    temp = path.with_name(f".{path.name}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_all(fd: int, data: Any) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def adopt_into(value: FileValue, folder: Path, stem: str, token: Callable[[], str]) -> FileValue:
    """The same bytes as files of ``folder`` named ``<stem>.<token>.bin`` (hard links when the
    files are elsewhere on the same disk, else copies); ``value`` itself when they already are
    files of ``folder`` named so."""
    names = value.names_in(folder)
    if names is not None and all(n.startswith(stem + ".") for n in names):
        return value
    made: list[Path] = []
    try:
        for path, _ in value.segments:
            target = folder / f"{stem}.{token()}.bin"
            try:
                os.link(path, target)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                    raise
                with new_file(target) as fd, open(path, "rb") as source:
                    for piece in iter(lambda: source.read(_CHUNK), b""):
                        write_all(fd, piece)
            made.append(target)
        fsync_dir(folder)
    except BaseException:
        for path in made:
            path.unlink(missing_ok=True)
        raise
    return FileValue([(p, n) for p, (_, n) in zip(made, value.segments)], value.md5,
                     value.checksums)


def share_parts(key: Any) -> None:
    """Let a multipart key's parts read their bytes from the key's files, one file a part
    (what ``GetObject`` with a ``partNumber`` reads); nothing when the files are not so."""
    value, multipart = key._value_buffer, key.multipart
    if not isinstance(value, FileValue) or multipart is None:
        return
    parts = [multipart.parts.get(n) for n in multipart.partlist]
    if len(parts) != len(value.segments) or any(
            p is None or p.contentsize != size for p, (_, size) in zip(parts, value.segments)):
        return
    for part, segment in zip(parts, value.segments):
        part._value_buffer = FileValue([segment], part.etag.strip('"'))


# --- S3 checksums, computed as the bytes stream ----------------------------------------------


def new_checksum(algorithm: str) -> Any:
    """An incremental digest of S3 checksum ``algorithm`` (``digest()``: raw bytes) as moto
    computes it: CRC64NVME is CRC32 where awscrt is not installed, an unknown name SHA-256."""
    name = algorithm.lower()
    if name not in s3digest.CHECKSUMS:
        name = "crc32" if name == "crc64nvme" else "sha256"
    return s3digest.new_checksum(name)


def checksum_of(value: FileValue, algorithm: str) -> bytes:
    """The raw checksum of ``value``'s bytes (cached in ``value.checksums``)."""
    name = algorithm.upper()
    if name not in value.checksums:
        digest = new_checksum(name)
        for piece in value.pieces(0, value.size):
            digest.update(piece)
        value.checksums[name] = digest.digest()
    return value.checksums[name]


# --- what moto is taught ----------------------------------------------------------------------


class _Handover:
    def __init__(self, value: FileValue | None = None) -> None:
        self.value = value
        self.key: Any = None


@contextlib.contextmanager
def receiving(value: FileValue) -> Iterator[_Handover]:
    """While active (this thread), the first key moto builds from an empty body takes
    ``value`` as its bytes; ``.key`` is that key afterwards (None if moto built none)."""
    handover = _Handover(value)
    _local.receiving = handover
    try:
        yield handover
    finally:
        _local.receiving = None


@contextlib.contextmanager
def serving(lend: bool = False) -> Iterator[_Handover]:
    """While active (this thread), the first file-backed key whose bytes moto reads answers
    none and hands its :class:`FileValue` over (``.value``, ``.key``). With ``lend`` (a copy)
    the key's bytes are answered as the :class:`FileValue` itself, which a new key adopts."""
    handover = _Handover()
    handover.lend = lend  # type: ignore[attr-defined]
    _local.serving = handover
    try:
        yield handover
    finally:
        _local.serving = None


def _adopt(key: Any, value: FileValue) -> None:
    previous = key._value_buffer
    key._value_buffer = value
    key.contentsize = value.size
    if key._etag is None and value.md5:
        key._etag = value.md5
    if previous is not value and hasattr(previous, "close"):
        previous.close()


def install() -> None:
    """Teach moto's S3 models the three things of this module's docstring (once)."""
    from moto.s3.models import FakeKey, FakeMultipart

    if getattr(FakeKey, "_nitronb_files", False):
        return
    plain = FakeKey.value

    def get_value(key: Any) -> Any:
        handover = getattr(_local, "serving", None)
        buffer = key.__dict__.get("_value_buffer")
        if handover is not None and handover.key is None and isinstance(buffer, FileValue):
            handover.key, handover.value = key, buffer
            return buffer if handover.lend else b""
        return plain.fget(key)

    def set_value(key: Any, value: Any) -> None:
        if isinstance(value, FileValue):
            _adopt(key, value)
            return
        handover = getattr(_local, "receiving", None)
        if handover is not None and handover.key is None and not value:
            handover.key = key
            _adopt(key, handover.value)
            return
        plain.fset(key, value)

    FakeKey.value = property(get_value, set_value)
    FakeMultipart.complete = _complete_from_files(FakeMultipart.complete)
    FakeKey._nitronb_files = True


def _complete_from_files(moto_complete: Callable) -> Callable:
    def complete(multipart: Any, body: Any) -> tuple[Any, str, Any]:
        """moto's ``FakeMultipart.complete`` for parts kept in files: the same checks and
        answers, the object the list of the parts' files."""
        from moto.s3.exceptions import EntityTooSmall, InvalidPart, MalformedXML
        from moto.s3.models import S3_UPLOAD_PART_MIN_SIZE
        from moto.s3.utils import compute_checksum

        body = list(body)
        parts = [multipart.parts.get(number) for number, _ in body]
        if not all(isinstance(getattr(p, "_value_buffer", None), FileValue) for p in parts):
            return moto_complete(multipart, iter(body))
        algorithm = multipart.metadata.get("x-amz-checksum-algorithm") or "CRC64NVME"
        kind = multipart.metadata.get("x-amz-checksum-type") or (
            "FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE")
        md5s, segments, composite, last = b"", [], b"", None
        for (_, etag), part in zip(body, parts):
            part_etag = part.etag.replace('"', "") if part is not None else None
            if part is None or part_etag != etag.replace('"', ""):
                raise InvalidPart()
            if last is not None and last.contentsize < S3_UPLOAD_PART_MIN_SIZE:
                raise EntityTooSmall()
            md5s += bytes.fromhex(part_etag)
            segments += part._value_buffer.segments
            if kind == "COMPOSITE":
                composite += checksum_of(part._value_buffer, algorithm)
            last = part
        if not parts:
            raise MalformedXML
        value = FileValue(segments)
        if kind == "COMPOSITE":
            checksum = compute_checksum(composite, algorithm).decode()
        else:
            import base64

            checksum = base64.b64encode(checksum_of(value, algorithm)).decode()
        etag = f"{hashlib.md5(md5s, usedforsecurity=False).hexdigest()}-{len(parts)}"
        return value, etag, (kind, checksum, len(parts) if kind == "COMPOSITE" else 1)

    return complete

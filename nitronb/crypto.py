"""The encrypted-file format: ``nonce (12) | ciphertext | tag (16)``, AES-256-GCM, no associated data.

Byte-compatible with the original tutorial's ``aes_256_gcm.py`` and enclave app. Each verb comes
in three forms: bytes, paths and file objects. Streaming keeps memory bounded whatever the size.
Decryption never releases unauthenticated plaintext: paths are written to a temporary file beside
the target and renamed into place only after the tag verified; streams are spooled first.
An input path may name a pipe, a FIFO or a device (``<(cat c.enc)``, ``/dev/stdin``): it is read
to its end as a stream; only a regular file is checked for its size before reading.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nitronb._progress import progress_bar
from nitronb.errors import DecryptionError, NitronbError, SameFileError
from nitronb.keys import key_bytes

NONCE_SIZE = 12
TAG_SIZE = 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
CHUNK_SIZE = 1 << 20
_SPOOL_LIMIT = 8 << 20

Key = bytes | str

__all__ = [
    "NONCE_SIZE", "TAG_SIZE", "OVERHEAD", "encrypt_bytes", "decrypt_bytes", "encrypt_stream",
    "decrypt_stream", "encrypt_file", "decrypt_file",
]


# --- bytes ----------------------------------------------------------------------------------


def encrypt_bytes(key: Key, plaintext: bytes) -> bytes:
    """Encrypt ``plaintext`` into the file format, with a fresh random nonce."""
    nonce = os.urandom(NONCE_SIZE)
    encryptor = Cipher(algorithms.AES(key_bytes(key)), modes.GCM(nonce)).encryptor()
    body = encryptor.update(plaintext) + encryptor.finalize()
    return nonce + body + encryptor.tag


def decrypt_bytes(key: Key, blob: bytes, *, name: str = "the data") -> bytes:
    """Decrypt and authenticate ``blob``; raise :class:`DecryptionError` on any mismatch."""
    if len(blob) < OVERHEAD:
        raise _truncated(name, len(blob))
    decryptor = Cipher(algorithms.AES(key_bytes(key)),
                       modes.GCM(blob[:NONCE_SIZE], blob[-TAG_SIZE:])).decryptor()
    plaintext = decryptor.update(blob[NONCE_SIZE:-TAG_SIZE])
    try:
        decryptor.finalize()
    except InvalidTag:
        raise _bad_tag(name) from None
    return plaintext


# --- streams --------------------------------------------------------------------------------


def encrypt_stream(key: Key, src: BinaryIO, dst: BinaryIO, *, size: int | None = None,
                   progress: bool | None = None) -> int:
    """Encrypt everything ``src`` yields into ``dst``; return the bytes written.

    ``size`` (the plaintext length, if known) only sizes the progress bar.
    """
    nonce = os.urandom(NONCE_SIZE)
    encryptor = Cipher(algorithms.AES(key_bytes(key)), modes.GCM(nonce)).encryptor()
    _write_all(dst, nonce)
    written = NONCE_SIZE
    buf = bytearray(CHUNK_SIZE)
    out = bytearray(CHUNK_SIZE + 15)
    view, out_view = memoryview(buf), memoryview(out)
    with progress_bar(size, "encrypt", enabled=progress) as bar:
        while True:
            n = src.readinto(view)
            if not n:
                break
            m = encryptor.update_into(view[:n], out)
            _write_all(dst, out_view[:m])
            written += m
            bar.update(n)
    encryptor.finalize()
    _write_all(dst, encryptor.tag)
    return written + TAG_SIZE


def decrypt_stream(key: Key, src: BinaryIO, dst: BinaryIO, *, name: str = "the input",
                   size: int | None = None, progress: bool | None = None) -> int:
    """Decrypt ``src`` into ``dst``; return the plaintext length.

    The plaintext is spooled (in memory up to 8 MiB, then on disk) and reaches ``dst`` only after
    the tag verified, so a failure writes nothing to ``dst``.
    """
    import tempfile

    with tempfile.SpooledTemporaryFile(max_size=_SPOOL_LIMIT) as spool:
        length = _decrypt_into(key_bytes(key), src, spool, name=name, size=size,
                               progress=progress)
        spool.seek(0)
        buf = bytearray(CHUNK_SIZE)
        view = memoryview(buf)
        while n := spool.readinto(view):
            _write_all(dst, view[:n])
    return length


# --- paths ----------------------------------------------------------------------------------


def encrypt_file(key: Key, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                 progress: bool | None = None) -> Path:
    """Encrypt the file ``src`` into ``dst`` atomically (an existing ``dst`` is replaced whole).

    ``src`` may be a pipe, a FIFO or a device, read to its end.
    """
    key = key_bytes(key)
    target, special = _output_target(dst)  # before Path() drops a trailing "/"
    src, dst = Path(src), Path(dst)
    _refuse_same_file(src, dst)
    with _open_input(src) as reader:
        size = _regular_size(reader)
        if special:
            with open(target, "wb") as writer:
                encrypt_stream(key, reader, writer, size=size, progress=progress)
        else:
            with _AtomicOutput(target, mode=0o666 & ~_umask()) as writer:
                encrypt_stream(key, reader, writer, size=size, progress=progress)
    return dst


def decrypt_file(key: Key, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                 progress: bool | None = None) -> Path:
    """Decrypt the file ``src`` into ``dst`` (mode 0600); nothing appears at ``dst`` unless the
    tag verifies, and an existing ``dst`` is untouched on failure.

    ``src`` may be a pipe, a FIFO or a device, read to its end; input shorter than nonce and tag
    (28 bytes), or whose tag does not verify, raises :class:`DecryptionError`.
    """
    key = key_bytes(key)
    target, special = _output_target(dst)  # before Path() drops a trailing "/"
    src, dst = Path(src), Path(dst)
    _refuse_same_file(src, dst)
    with _open_input(src) as reader:
        size = _regular_size(reader)
        if size is not None and size < OVERHEAD:
            raise _truncated(str(src), size)
        if special:  # a device or a pipe: written only once the tag verified
            with open(target, "wb") as writer:
                decrypt_stream(key, reader, writer, name=str(src), size=size, progress=progress)
        else:
            with _AtomicOutput(target, mode=0o600) as writer:
                _decrypt_into(key, reader, writer, name=str(src), size=size, progress=progress)
    return dst


# --- internals ------------------------------------------------------------------------------


def _decrypt_into(key: bytes, src: BinaryIO, dst: BinaryIO, *, name: str, size: int | None,
                  progress: bool | None) -> int:
    nonce = _read_exact(src, NONCE_SIZE)
    if len(nonce) < NONCE_SIZE:
        raise _truncated(name, len(nonce))
    decryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).decryptor()
    # The last TAG_SIZE bytes read so far are held back at the front of the buffer: they may be
    # the tag. Each read lands after them; everything but the new last TAG_SIZE bytes is decrypted.
    buf = bytearray(TAG_SIZE + CHUNK_SIZE)
    out = bytearray(CHUNK_SIZE + TAG_SIZE + 15)
    view, out_view = memoryview(buf), memoryview(out)
    held = 0
    written = 0
    with progress_bar(size, "decrypt", enabled=progress) as bar:
        bar.update(NONCE_SIZE)
        while True:
            n = src.readinto(view[held:])
            if not n:
                break
            bar.update(n)
            available = held + n
            if available <= TAG_SIZE:
                held = available
                continue
            body = available - TAG_SIZE
            m = decryptor.update_into(view[:body], out)
            _write_all(dst, out_view[:m])
            written += m
            buf[:TAG_SIZE] = buf[body:available]
            held = TAG_SIZE
    if held < TAG_SIZE:
        raise _truncated(name, NONCE_SIZE + held)
    try:
        decryptor.finalize_with_tag(bytes(buf[:TAG_SIZE]))
    except InvalidTag:
        raise _bad_tag(name) from None
    return written


def _read_exact(src: BinaryIO, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        part = src.read(n - len(chunks))
        if not part:
            break
        chunks += part
    return bytes(chunks)


def _write_all(dst: BinaryIO, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = dst.write(view)
        if n is None or n >= len(view):  # buffered writers write everything or raise
            return
        view = view[n:]


def _truncated(name: str, size: int) -> DecryptionError:
    return DecryptionError(
        f"cannot decrypt {name}: it is {size} bytes, shorter than the {OVERHEAD} bytes of nonce "
        f"and tag that every encrypted file has, so it is truncated or not an encrypted file. "
        f"Nothing was written.", path=name)


def _bad_tag(name: str) -> DecryptionError:
    return DecryptionError(
        f"cannot decrypt {name}: authentication failed. Either the key is not the one it was "
        f"encrypted with, or the file was modified or truncated. Nothing was written.", path=name)


def _refuse_same_file(src: Path, dst: Path) -> None:
    if os.path.realpath(src) == os.path.realpath(dst):
        raise SameFileError(dst)
    try:
        if dst.exists() and os.path.samefile(src, dst):
            raise SameFileError(dst)
    except FileNotFoundError:
        pass


def _output_target(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """Where to write for ``path``: symbolic links are followed (the file they name is
    replaced, not the link); ``True`` when it is a device or a pipe, which is written in place
    rather than replaced; a folder is refused."""
    if str(path).endswith(("/", os.sep)):
        raise NitronbError(f"{path} names a folder; give the path of a file to write.")
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise NitronbError(f"{path} is a folder; give the path of a file to write.")
    return target, target.exists() and not target.is_file()


def _open_input(path: Path) -> BinaryIO:
    try:
        return open(path, "rb", buffering=0)
    except FileNotFoundError:
        raise NitronbError(f"{path} does not exist.", hint=f"Check the path: it is read from "
                           f"{Path.cwd()} when it is not absolute.") from None
    except IsADirectoryError:
        raise NitronbError(f"{path} is a folder, not a file.") from None
    except PermissionError:
        raise NitronbError(f"{path} cannot be read: permission denied.") from None


def _regular_size(reader: BinaryIO) -> int | None:
    """The size of a regular file; None for a pipe, FIFO, socket or device, whose size says
    nothing about what it will yield."""
    info = os.fstat(reader.fileno())
    return info.st_size if stat.S_ISREG(info.st_mode) else None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class _AtomicOutput:
    """A temporary file beside ``target``, renamed onto it on success and removed on failure."""

    def __init__(self, target: Path, *, mode: int) -> None:
        self.target = target
        self.mode = mode
        self.tmp: Path | None = None
        self.handle: BinaryIO | None = None

    def __enter__(self) -> BinaryIO:
        folder = self.target.parent
        if not folder.is_dir():
            raise NitronbError(f"cannot write {self.target}: the folder {folder} does not exist.")
        self.tmp = folder / f".{self.target.name}.{os.urandom(6).hex()}.part"
        try:
            fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise NitronbError(f"cannot write {self.target}: {exc.strerror}.") from None
        self.handle = os.fdopen(fd, "wb", buffering=0)
        return self.handle

    def __exit__(self, exc_type, exc, tb) -> None:
        assert self.handle is not None and self.tmp is not None
        try:
            self.handle.close()
            if exc_type is None:
                os.chmod(self.tmp, self.mode)
                os.replace(self.tmp, self.target)
        finally:
            if exc_type is not None or self.tmp.exists():
                self.tmp.unlink(missing_ok=True)

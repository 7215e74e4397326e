"""AES-256 keys as 64 upper-case hex characters, the way ``xxd -u -l 32 -p /dev/random`` writes them."""

from __future__ import annotations

import os
import string
from pathlib import Path

from nitronb._files import write_atomic
from nitronb.errors import KeyFileError, OutputExistsError

KEY_SIZE = 32
HEX_LENGTH = 2 * KEY_SIZE
_HEX = frozenset(string.hexdigits)
_WHITESPACE = frozenset(" \t\r\n")  # what may separate the digits: xxd's line breaks, CRLF, spaces
_FIX = "Generate a key with `nitronb keygen -o FILE`."


def generate_key() -> str:
    """A fresh random 256-bit key as 64 upper-case hex characters."""
    return os.urandom(KEY_SIZE).hex().upper()


def parse_key(text: str, *, source: str = "the key") -> str:
    """Validate a hex key; return its 64 hex digits upper-case, without whitespace.

    ASCII whitespace (space, tab, CR, LF) may stand anywhere between the digits, as in the
    two lines ``xxd -u -l 32 -p`` writes (60 digits, then 4) or a file saved with CRLF line ends;
    anything else that is not a hex digit, and any count other than 64 digits, raises
    :class:`~nitronb.errors.KeyFileError`. ``source`` names where the text came from, for the
    error message; the key itself is never part of a message.
    """
    if not isinstance(text, str):
        raise KeyFileError(f"{source} is {type(text).__name__}; a key is {HEX_LENGTH} hex "
                           "characters.", path=_path_of(source), hint=_FIX)
    digits = []
    for position, char in enumerate(text):
        if char in _WHITESPACE:
            continue
        if char not in _HEX:
            shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
            raise KeyFileError(
                f"{source} holds a non-hex character {shown} at position {position + 1}; "
                f"a key is {HEX_LENGTH} hex characters (0-9, A-F).",
                path=_path_of(source), hint=_FIX)
        digits.append(char)
    if not digits:
        raise KeyFileError(f"{source} is empty; a key is {HEX_LENGTH} hex characters.",
                           path=_path_of(source), hint=_FIX)
    if len(digits) != HEX_LENGTH:
        raise KeyFileError(
            f"{source} has {len(digits)} hex characters; an AES-256 key has exactly {HEX_LENGTH} "
            f"({KEY_SIZE} bytes).", path=_path_of(source), hint=_FIX)
    return "".join(digits).upper()


def _path_of(source: str) -> str | None:
    return source[len("key file "):] if source.startswith("key file ") else None


def key_bytes(key: bytes | bytearray | str) -> bytes:
    """The 32 raw bytes of ``key``, given as raw bytes or as hex text."""
    if isinstance(key, (bytes, bytearray)):
        if len(key) != KEY_SIZE:
            raise KeyFileError(f"the key has {len(key)} bytes; an AES-256 key has {KEY_SIZE}.",
                               hint=_FIX)
        return bytes(key)
    if isinstance(key, str):
        return bytes.fromhex(parse_key(key))
    raise KeyFileError(f"a key is 32 bytes or 64 hex characters, not {type(key).__name__}.")


def read_key_file(path: str | os.PathLike[str]) -> str:
    """Read and validate a key file; return the key as upper-case hex."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"key file {path} does not exist.", path=path, hint=_FIX) from None
    except IsADirectoryError:
        raise KeyFileError(f"key file {path} is a folder, not a file.", path=path) from None
    except OSError as exc:
        raise KeyFileError(f"key file {path} cannot be read: {exc.strerror}.", path=path) from None
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileError(f"key file {path} is not text; a key is {HEX_LENGTH} hex characters.",
                           path=path, hint=_FIX) from None
    return parse_key(text, source=f"key file {path}")


def write_key_file(path: str | os.PathLike[str], key: str | None = None, *,
                   overwrite: bool = False) -> str:
    """Write ``key`` (a new one when None) to ``path`` with mode 0600; return the key.

    An existing file is kept unless ``overwrite``; a replaced file is swapped in atomically.
    """
    key = generate_key() if key is None else parse_key(key)
    path = Path(path)
    data = (key + "\n").encode("ascii")
    if not overwrite:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise OutputExistsError(path, hint="Replace it with --force (overwrite=True from "
                                               "Python); files encrypted with the old key then "
                                               "cannot be decrypted with the new one.") from None
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(path, 0o600)  # whatever the umask
        return key
    write_atomic(path, data, mode=0o600)
    return key


def fingerprint(key: str | bytes) -> str:
    """A key's fingerprint for display: the first 8 hex digits of SHA-256 of its 32 bytes.

    Tells two keys apart without showing any digit of either. ``key`` is 64 hex characters or
    the raw bytes; raises :class:`~nitronb.errors.KeyFileError` for anything else."""
    import hashlib

    return hashlib.sha256(key_bytes(key)).hexdigest()[:8]


def redact(key: str | bytes) -> str:
    """A key for display: the first and last four hex characters (``63F0…D24A``)."""
    text = key.hex().upper() if isinstance(key, (bytes, bytearray)) else str(key).strip().upper()
    if len(text) < 12:
        return "…"
    return f"{text[:4]}…{text[-4:]}"

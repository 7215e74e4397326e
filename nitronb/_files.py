"""Writing small files atomically with a given mode (keys, tokens, state)."""

from __future__ import annotations

import os
from pathlib import Path


def write_atomic(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o600) -> Path:
    """Write ``data`` to ``path`` through a temporary file beside it, renamed into place; the
    file has ``mode`` whatever the umask, and a failure leaves any previous file untouched."""
    path = Path(os.path.realpath(path))  # through a symlink: replace the file it names
    if path.exists() and not path.is_file():
        from nitronb.errors import NitronbError

        raise NitronbError(f"{path} is not a regular file; refusing to replace it.")
    tmp = path.with_name(f".{path.name}.{os.urandom(4).hex()}.part")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path

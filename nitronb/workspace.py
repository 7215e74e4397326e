"""The workspace: where keys, the local stack's state, credentials and logs live."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "NITRONB_WORKSPACE"


def workspace_dir(path: str | os.PathLike[str] | None = None, *, create: bool = True) -> Path:
    """The workspace folder: ``path`` if given, else ``$NITRONB_WORKSPACE``, else ``~/.nitronb``."""
    if path is None or str(path) == "":
        path = os.environ.get(ENV_VAR) or Path.home() / ".nitronb"
    folder = Path(path).expanduser().resolve()
    if create:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    return folder


def private_dir(folder: Path) -> Path:
    """Create ``folder`` (and parents) readable by its owner only."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    return folder

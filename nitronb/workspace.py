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


#: names the walk-through's state folder for the notebooks of one batch run (see walkthrough_dir)
RUN_ENV_VAR = "NITRONB_WALKTHROUGH"


def walkthrough_dir(workspace: Path, run: str | None = None) -> Path:
    """The folder where the walk-through's steps keep the state they hand on (keys, the
    encrypted input, the datasets, the result): ``<workspace>/walkthrough``, or for the run
    named ``run`` (default ``$NITRONB_WALKTHROUGH``, set by ``nitronb walkthrough --batch``)
    ``<workspace>/walkthroughs/<run>``. Raises ``ValueError`` for a run name that is not
    letters, digits, ``.``, ``_`` and ``-`` (or is ``.``/``..``)."""
    import re

    run = run if run is not None else os.environ.get(RUN_ENV_VAR, "")
    if not run:
        return workspace / "walkthrough"
    if not re.fullmatch(r"[A-Za-z0-9._-]{1,100}", run) or run in (".", ".."):
        raise ValueError(f"{run!r} is not a walk-through run name (letters, digits, '.', '_' "
                         "and '-').")
    return workspace / "walkthroughs" / run

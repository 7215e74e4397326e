"""Test-session set-up shared by the unit tests and the notebook regression (nbval).

The session gets a workspace of its own, so that tests never touch a user's ``~/.nitronb``; the
notebooks' kernels inherit it. The notebooks run on the ``nitronb`` kernel (this interpreter),
installed here if missing. Whatever local stack the notebooks started is stopped at the end.
"""

from __future__ import annotations

import os
import shutil
import tempfile

_WORKSPACE: str | None = None


def pytest_configure(config) -> None:
    global _WORKSPACE
    _WORKSPACE = tempfile.mkdtemp(prefix="nitronb-tests-")
    os.environ["NITRONB_WORKSPACE"] = _WORKSPACE
    from nitronb.notebook.runner import ensure_kernelspec

    ensure_kernelspec()


def pytest_unconfigure(config) -> None:
    if _WORKSPACE is None:
        return
    try:
        from nitronb.local import stack as local

        local.down(_WORKSPACE)
    finally:
        shutil.rmtree(_WORKSPACE, ignore_errors=True)

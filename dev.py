#!/usr/bin/env python3
"""Set up the project in ``.venv`` and run its main job or its tests. Needs only Python 3.11+.

    python3 dev.py demo     # set up, then run the walk-through on the embedded local stack
                            # (extra arguments go to `nitronb walkthrough`, e.g. -p backend auto)
    python3 dev.py test     # set up, then run the whole test suite (the manager on SQLite),
                            # then the manager's tests (tests/ccm) on PostgreSQL: a private
                            # server from its installed binaries, or $NITRONB_TEST_DATABASE_URL
                            # (skipped, with the reason, when there is neither); extra
                            # arguments go to pytest instead (one run, as given)
    python3 dev.py setup    # set up only
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / "bin"
STAMP = VENV / ".nitronb-installed"


def setup() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"nitronb needs Python 3.11 or newer; this is {sys.version.split()[0]}.")
    if not (BIN / "python").exists():
        print(f"creating {VENV.relative_to(ROOT)} …", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    spec = ROOT / "pyproject.toml"
    if STAMP.exists() and STAMP.stat().st_mtime >= spec.stat().st_mtime:
        ensure_kernel()
        return
    print("installing nitronb and its dependencies into .venv (a few minutes the first time) …",
          flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f"{ROOT}[test]"], check=True)
    ensure_kernel()
    STAMP.touch()


def ensure_kernel() -> None:
    """The notebooks' Jupyter kernel, 'nitronb': the venv's Python (installed if missing)."""
    subprocess.run([str(BIN / "python"), "-c",
                    "from nitronb.notebook.runner import ensure_kernelspec; ensure_kernelspec()"],
                   check=True)


def run(argv: list[str]) -> int:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    return subprocess.run(argv, cwd=ROOT, env=env).returncode


def main() -> int:
    command, *rest = sys.argv[1:] or ["help"]
    if command not in ("setup", "demo", "test"):
        print(__doc__.strip())
        return 0 if command in ("help", "-h", "--help") else 2
    setup()
    if command == "setup":
        return 0
    if command == "demo":
        return run([str(BIN / "nitronb"), "walkthrough", *rest])
    pytest = [str(BIN / "python"), "-m", "pytest"]
    if rest:
        return run([*pytest, *rest])
    suite = run(pytest)
    on_postgresql = run([*pytest, "tests/ccm", "--database", "postgresql"])
    return suite or on_postgresql


if __name__ == "__main__":
    sys.exit(main())

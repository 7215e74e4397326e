"""The process that runs one process-backend enclave and records how it ended.

The node agent starts it, in a session of its own, as the parent of the enclave (bubblewrap's
``--die-with-parent`` follows it, not the agent): it outlives a node agent that crashes, and the
enclave's outcome is on disk whoever reads it next. In the enclave's folder it writes
``supervisor.json`` (``{"pid"}``) when it starts and ``exit.json`` (``{"exit_code", "ended_at"}``,
the code as :class:`subprocess.Popen` gives it: negative for a signal; seconds since the epoch)
when the enclave has ended, then removes the enclave's private folder (its image copy and
app-config folder, whose files are overwritten with zeros first: a launcher killed before it
wiped them leaves dataset credentials there). SIGTERM, SIGINT and SIGHUP are passed on to the enclave, whose end is then
recorded like any other.

    python -I .../nitronb/enclave/supervisor.py --folder ENCLAVE_FOLDER [--clean PATH]… [--pass-fd N] -- ARGV…

It is run by its path and imports the standard library only: the enclave's environment, which
it inherits, names no Python path.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: in the enclave's folder: the supervisor's pid, written when it starts
STARTED = "supervisor.json"
#: in the enclave's folder: how the enclave ended, written once it has
ENDED = "exit.json"
_SCRIPT = str(Path(__file__).resolve())


def _write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    temp = path.with_name(f".{path.name}.tmp")
    with open(temp, "w", encoding="utf-8") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(temp, path)


def remove(path: Path) -> None:
    """Overwrite every regular file under ``path`` with zeros, then remove the tree."""
    for current, _dirs, names in os.walk(path):
        for name in names:
            target = Path(current) / name
            try:
                if target.is_file() and not target.is_symlink():
                    size = target.stat().st_size
                    with open(target, "r+b") as handle:
                        handle.write(bytes(size))
                        handle.flush()
                        os.fsync(handle.fileno())
            except OSError:
                pass
    shutil.rmtree(path, ignore_errors=True)


def read_record(folder: Path, name: str) -> dict[str, Any] | None:
    """The supervisor's ``name`` record (:data:`STARTED` or :data:`ENDED`) in ``folder``, or None
    when it is missing or unreadable."""
    try:
        data = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def alive(pid: int, folder: Path) -> bool:
    """Whether ``pid`` is the supervisor of the enclave in ``folder`` and still running."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] in ("Z", "X"):
        return False
    return _SCRIPT.encode() in cmdline and str(folder).encode() in cmdline


def command(folder: Path, argv: list[str], *, clean: list[Path] = (),
            pass_fd: int | None = None) -> list[str]:
    """The command line that runs ``argv`` supervised, recording into ``folder``."""
    line = [sys.executable, "-I", _SCRIPT, "--folder", str(folder)]
    for path in clean:
        line += ["--clean", str(path)]
    if pass_fd is not None:
        line += ["--pass-fd", str(pass_fd)]
    return [*line, "--", *argv]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="supervisor.py")
    parser.add_argument("--folder", required=True, type=Path)
    parser.add_argument("--clean", action="append", default=[], type=Path)
    parser.add_argument("--pass-fd", type=int)
    parser.add_argument("argv", nargs="+")
    args = parser.parse_args(argv)
    folder: Path = args.folder
    _write(folder / STARTED, {"pid": os.getpid()})
    child: subprocess.Popen | None = None

    def forward(signum: int, _frame: Any) -> None:
        if child is not None and child.poll() is None:
            child.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    fds = (args.pass_fd,) if args.pass_fd is not None else ()
    try:
        child = subprocess.Popen(args.argv, stdin=subprocess.DEVNULL, pass_fds=fds)
        code = child.wait()
    except OSError as exc:
        print(f"[enclave-os] cannot start the enclave: {exc}", file=sys.stderr, flush=True)
        code = 71
    finally:
        if args.pass_fd is not None:
            try:
                os.close(args.pass_fd)
            except OSError:
                pass
    try:
        _write(folder / ENDED, {"exit_code": code, "ended_at": time.time()})
    finally:
        for path in args.clean:
            remove(path)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

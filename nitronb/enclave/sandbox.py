"""The process backend's sandbox: an image's measured Dockerfile read as a file-system layout,
and the bubblewrap (``bwrap``) command that runs the enclave in a private root built from it.

Inside the sandbox only these are visible: the measured image tree laid out at the Dockerfile's
COPY/ADD destinations (files read-only; WORKDIR and ENV honoured; ``RUN mkdir`` of absolute
folders honoured, every other RUN line not run), the measured inputs at ``/opt/nitronb``, the
stand-in interpreter (``python3``, ``/usr/bin/python3`` and ``/usr/bin/env python3`` run
nitronb's own Python with its packages), the host's shared libraries and CA certificates
(read-only), and the app-config folder at ``/opt/fortanix/enclave-os/app-config/rw``. The root
is a tmpfs: whatever the enclave writes is gone when it ends. PID, IPC and UTS namespaces are
new; the network is the host's (the enclave reaches the node agent, the manager and the S3
endpoint on 127.0.0.1).

Without bubblewrap (``$NITRONB_BWRAP`` names another binary; a path that does not exist means
none), an image may run unsandboxed only when it is laid out as nitronb's own app
(:func:`unsandboxed_refusal` gives the rule).
"""

from __future__ import annotations

import fnmatch
import os
import posixpath
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from nitronb.enclave.dockerfile import instructions, words
from nitronb.errors import ImageBuildError

#: the app-config folder's canonical path inside an enclave
APP_CONFIG_PATH = "/opt/fortanix/enclave-os/app-config/rw"
#: where the measured inputs are inside an enclave (as in a container image)
IMAGE_PATH = "/opt/nitronb"
#: the only prefix an image may use to run without the sandbox: nitronb's own layout
UNSANDBOXED_ROOT = "/app"
BWRAP_HINT = ("Install bubblewrap (Debian/Ubuntu: `apt-get install bubblewrap`; Fedora: "
              "`dnf install bubblewrap`), or set NITRONB_BWRAP to its path.")
#: names and paths under which a Dockerfile's CMD reaches the stand-in interpreter
PYTHON_NAMES = ("python3", "python", f"python{sys.version_info[0]}.{sys.version_info[1]}")
PYTHON_PATHS = tuple(f"{d}/{n}" for d in ("/usr/bin", "/usr/local/bin", "/bin")
                     for n in PYTHON_NAMES)
ENV_PATHS = ("/usr/bin/env", "/bin/env")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxUnavailableError(ImageBuildError):
    """The image needs the bubblewrap sandbox and bubblewrap is not installed."""


@dataclass
class Layout:
    """A Dockerfile read for the process backend.

    ``files`` maps each absolute path inside the image to the build context's relative path;
    ``dirs`` are the absolute folders ``RUN mkdir`` creates; ``workdir`` is the last WORKDIR
    (``/`` when none); ``env`` the ENV values in order; ``not_run`` the RUN lines the process
    backend does not run; ``command`` the exec-form CMD (ENTRYPOINT first, if any).
    """

    files: dict[str, str] = field(default_factory=dict)
    dirs: list[str] = field(default_factory=list)
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    not_run: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


def find_bwrap() -> str | None:
    """The bubblewrap binary: ``$NITRONB_BWRAP`` when set (None if it is not an executable
    file), else ``bwrap`` on PATH, else None."""
    given = os.environ.get("NITRONB_BWRAP")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return shutil.which("bwrap")


def _absolute(path: str, workdir: str) -> str:
    return posixpath.normpath(posixpath.join(workdir, path))


def _copy(args: list[str], workdir: str, context: Mapping[str, object], line: str
          ) -> dict[str, str]:
    args = [a for a in args if not a.startswith("--")]
    if len(args) < 2:
        raise ImageBuildError(f"the Dockerfile line {line!r} names no source and destination.")
    *sources, dest = args
    into_dir = dest.endswith("/") or len(sources) > 1
    dest = _absolute(dest, workdir)
    placed: dict[str, str] = {}
    for source in sources:
        if "://" in source:
            raise ImageBuildError(f"the Dockerfile line {line!r} fetches {source}: the process "
                                  "backend runs only files of the measured build context.")
        pattern = posixpath.normpath(source.lstrip("/")) if source.strip("./") else "."
        if pattern.startswith(".."):
            raise ImageBuildError(f"the Dockerfile line {line!r} copies from outside the "
                                  "build context.")
        glob = any(c in pattern for c in "*?[")
        matched = False
        for name in sorted(context):
            if pattern == ".":
                target = posixpath.join(dest, name)
            elif glob and fnmatch.fnmatchcase(name, pattern) \
                    and name.count("/") == pattern.count("/"):
                target = posixpath.join(dest, posixpath.basename(name))
            elif name == pattern:
                target = posixpath.join(dest, posixpath.basename(name)) if into_dir else dest
            elif name.startswith(pattern + "/"):
                target = posixpath.join(dest, name[len(pattern) + 1:])
            else:
                continue
            matched = True
            placed[target] = name
        if not matched:
            raise ImageBuildError(f"the Dockerfile line {line!r} names {source}, which is not "
                                  "in the build context.")
    return placed


def read_layout(context: Mapping[str, object]) -> Layout:
    """Read the build context's ``Dockerfile`` (``context`` maps relative paths to files, as
    :func:`nitronb.enclave.measure.tree_files` gives them) into a :class:`Layout`; raise
    :class:`ImageBuildError` for a COPY/ADD the process backend cannot lay out."""
    layout = Layout()
    path = context.get("Dockerfile")
    if path is None:
        return layout
    text = Path(path).read_text(encoding="utf-8", errors="replace")
    entrypoint: list[str] = []
    cmd: list[str] = []
    for word, rest in instructions(text):
        line = f"{word} {rest}"
        if word == "FROM":
            # a new stage starts afresh: the last stage is the image
            layout, entrypoint, cmd = Layout(not_run=layout.not_run), [], []
        elif word in ("COPY", "ADD"):
            args = words(rest)
            if any(a.startswith("--from") for a in args):
                raise ImageBuildError(f"the Dockerfile line {line!r} copies from another stage "
                                      "or image; the process backend runs only files of the "
                                      "measured build context.")
            layout.files.update(_copy(args, layout.workdir, context, line))
        elif word == "WORKDIR":
            layout.workdir = _absolute(rest.strip(), layout.workdir)
        elif word == "ENV":
            parts = shlex.split(rest)
            if parts and "=" not in parts[0]:
                layout.env[parts[0]] = rest.split(None, 1)[1] if len(parts) > 1 else ""
            else:
                layout.env.update(w.split("=", 1) for w in parts if "=" in w)
        elif word == "RUN":
            folders = _mkdir_only(rest)
            if folders is None:
                layout.not_run.append(rest)
            else:
                layout.dirs.extend(folders)
        elif word == "CMD":
            cmd = words(rest) if rest.startswith("[") else []
        elif word == "ENTRYPOINT":
            entrypoint = words(rest) if rest.startswith("[") else []
    layout.command = entrypoint + cmd
    return layout


def not_run_lines(context: Mapping[str, object]) -> list[str]:
    """The RUN lines of the build context's Dockerfile that the process backend does not run
    (they are measured all the same: the Dockerfile is part of PCR2); [] when it cannot be
    read."""
    try:
        return read_layout(context).not_run
    except ImageBuildError:
        return []


def _mkdir_only(rest: str) -> list[str] | None:
    """The absolute folders of a RUN line that only makes folders (``mkdir [-p] /A /B [&& …]``),
    else None."""
    try:
        parts = shlex.split(rest)
    except ValueError:
        return None
    folders: list[str] = []
    for part in " ".join(parts).split("&&"):
        items = part.split()
        if not items or items[0] != "mkdir":
            return None
        for item in items[1:]:
            if item in ("-p", "--parents"):
                continue
            if not item.startswith("/") or any(c in item for c in "*?$`;|<>"):
                return None
            folders.append(posixpath.normpath(item))
    return folders or None


def _script(command: list[str]) -> tuple[str | None, int]:
    """The script a python command runs and its index (None for ``-c`` and ``-m``)."""
    i = 1
    while i < len(command):
        arg = command[i]
        if arg in ("-c", "-m"):
            return None, -1
        if arg.startswith("-"):
            i += 1
            continue
        return arg, i
    return None, -1


def check_command(layout: Layout) -> None:
    """Refuse a command that does not run the measured image: it must be the stand-in Python
    running a script of the layout (or ``-c``/``-m``), or a file of the layout itself."""
    command = list(layout.command)
    if not command:
        raise ImageBuildError("the image's Dockerfile names no exec-form CMD to run.")
    if command[0] in ENV_PATHS:
        command = command[1:]
    if not command:
        raise ImageBuildError("the image's CMD runs `env` with no program.")
    first = command[0]
    if first in PYTHON_NAMES or first in PYTHON_PATHS:
        script, _ = _script(command)
        if script is None:
            return
        where = _absolute(script, layout.workdir)
        if where not in layout.files:
            raise ImageBuildError(
                f"the image's CMD runs {script}, which is not a file of the measured image "
                "(no COPY or ADD of the Dockerfile puts it there); refusing to run it.",
                hint="COPY the script into the image and name its path in the image.")
        return
    where = _absolute(first, layout.workdir)
    if where not in layout.files:
        raise ImageBuildError(
            f"the image's CMD runs {first}, which is neither a file of the measured image nor "
            "python3; refusing to run it.",
            hint="COPY the program into the image, or run it with python3.")


def unsandboxed_refusal(layout: Layout, context: Mapping[str, object]) -> str | None:
    """Why ``layout`` cannot run without the sandbox, or None if it can.

    It can when it is laid out as nitronb's own app: every COPY/ADD destination and WORKDIR is
    ``/app`` or below, the CMD is ``python3`` running a script below ``/app``, and the app does
    not hard-code the app-config folder (a file naming ``/opt/fortanix/enclave-os`` must also
    read ``APP_CONFIG_DIR``).
    """
    def inside(path: str) -> bool:
        return path == UNSANDBOXED_ROOT or path.startswith(UNSANDBOXED_ROOT + "/")

    outside = sorted(p for p in layout.files if not inside(p))
    if outside:
        return f"it puts {outside[0]} outside {UNSANDBOXED_ROOT}"
    if layout.workdir != "/" and not inside(layout.workdir):
        return f"its WORKDIR {layout.workdir} is outside {UNSANDBOXED_ROOT}"
    command = layout.command[1:] if layout.command[:1] and layout.command[0] in ENV_PATHS \
        else layout.command
    if not command or command[0] not in PYTHON_NAMES + PYTHON_PATHS:
        return "its CMD is not python3 running a script"
    if layout.dirs:
        return f"it makes the folder {layout.dirs[0]}"
    for name, path in context.items():
        try:
            text = Path(path).read_text(encoding="utf-8", errors="replace")  # type: ignore[arg-type]
        except OSError:
            continue
        if "/opt/fortanix/enclave-os" in text and "APP_CONFIG_DIR" not in text:
            return f"{name} expects the app-config folder at /opt/fortanix/enclave-os"
    return None


def python_binds() -> list[str]:
    """Read-only folders nitronb's Python needs: its installation and its environment."""
    found = {os.path.realpath(p) for p in (sys.base_prefix, sys.base_exec_prefix, sys.prefix,
                                           sys.exec_prefix)}
    # a minimal set: drop a folder inside another one
    return sorted(p for p in found if not any(p != q and p.startswith(q + "/") for q in found))


_SYSTEM = ("/usr/lib", "/usr/lib64", "/usr/lib32", "/usr/libx32", "/usr/share/ca-certificates",
           "/usr/share/zoneinfo", "/etc/ssl", "/etc/ca-certificates", "/etc/pki",
           "/etc/ld.so.cache", "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf",
           "/etc/localtime")


def bwrap_command(bwrap: str, *, image_root: Path, layout: Layout, app_config: Path,
                  wrapper: Path, env: Mapping[str, str], argv: list[str]) -> list[str]:
    """The ``bwrap`` command line that runs ``argv`` in the enclave's sandbox.

    ``image_root`` is the measured image tree (``app/``, ``launcher/``, ``image.json``),
    ``app_config`` the private host folder bound at :data:`APP_CONFIG_PATH`, ``wrapper`` a
    host script that runs nitronb's Python (bound as ``python3``); ``env`` is the whole
    environment inside (the host's is cleared).
    """
    args = [bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc",
            "--unshare-uts", "--hostname", "enclave", "--clearenv",
            "--tmpfs", "/", "--proc", "/proc", "--dev", "/dev", "--dir", "/tmp",
            "--dir", "/root", "--dir", "/usr/bin", "--dir", "/usr/local/bin"]
    for path in _SYSTEM:
        if os.path.exists(path):
            args += ["--ro-bind", path, path]
    for name in ("lib", "lib64", "lib32", "libx32", "bin", "sbin"):
        host = Path("/") / name
        if host.is_symlink():
            args += ["--symlink", os.readlink(host), f"/{name}"]
        elif host.is_dir() and name.startswith("lib"):
            args += ["--ro-bind", str(host), f"/{name}"]
    if not Path("/bin").is_symlink():
        args += ["--dir", "/bin"]
    for tool in ("env", "sh"):
        host = shutil.which(tool, path="/usr/bin:/bin")
        if host:
            args += ["--ro-bind", os.path.realpath(host), f"/usr/bin/{tool}"]
            if not Path("/bin").is_symlink():
                args += ["--ro-bind", os.path.realpath(host), f"/bin/{tool}"]
    for path in python_binds():
        args += ["--ro-bind", path, path]
    for target in PYTHON_PATHS:
        if target.startswith("/bin/") and Path("/bin").is_symlink():
            continue
        args += ["--ro-bind", str(wrapper), target]
    args += ["--ro-bind", str(image_root), IMAGE_PATH]
    for folder in layout.dirs:
        args += ["--dir", folder]
    for inside, rel in sorted(layout.files.items()):
        args += ["--ro-bind", str(image_root / "app" / rel), inside]
    if layout.workdir != "/":
        args += ["--dir", layout.workdir]
    args += ["--bind", str(app_config), APP_CONFIG_PATH, "--chdir", layout.workdir]
    for name, value in env.items():
        args += ["--setenv", name, value]
    return args + ["--", *argv]


def python_wrapper(folder: Path) -> Path:
    """A shell script in ``folder`` that runs nitronb's Python with its arguments (the
    sandbox's ``python3``: a symbolic link would lose the virtual environment)."""
    path = folder / "python3"
    path.write_text(f"#!/bin/sh\nexec {shlex.quote(sys.executable)} \"$@\"\n",
                    encoding="utf-8")
    os.chmod(path, 0o555)
    return path

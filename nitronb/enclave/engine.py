"""Finding, or starting, a container engine that speaks the Docker Engine API.

The candidates, in order: ``$DOCKER_HOST``; Docker's ``/var/run/docker.sock``; the Podman service
nitronb starts in the workspace (``<workspace>/podman/podman.sock``); Podman's system socket
``/run/podman/podman.sock``. Podman is started with :func:`start_podman_service`, and the base image
the app is built on is made with :func:`ensure_base_image` (Debian bookworm with python3 and the
app's libraries from Debian packages, since no registry is assumed reachable).
``scripts/provision-podman.sh`` does the same from a shell, for CI.
"""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from nitronb.errors import EngineUnavailableError, ImageBuildError
from nitronb.workspace import private_dir, workspace_dir

if TYPE_CHECKING:  # pragma: no cover
    import docker

BASE_IMAGE_NAME = "localhost/nitronb-python-base"
BASE_SUITE = "bookworm"
#: python3-cffi-backend is named because debootstrap does not resolve the virtual package
#: that python3-cryptography depends on
BASE_PACKAGES = ("python3", "python3-cffi-backend", "python3-cryptography", "python3-requests",
                 "python3-pandas")
DEFAULT_CACHE_DIR = Path("/var/cache/nitronb")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
DOCKER_SOCKET = "/var/run/docker.sock"
PODMAN_SYSTEM_SOCKET = "/run/podman/podman.sock"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]

[engine]
runtime = "runc"
"""
_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROVISION = "Run scripts/provision-podman.sh (as root) to install and start Podman."

__all__ = [
    "find_engine", "require_engine", "engine_candidates", "start_podman_service",
    "stop_podman_service", "podman_socket", "podman_env", "ensure_base_image", "ping_socket",
]


def podman_socket(workspace: str | os.PathLike[str] | None = None) -> Path:
    """Where nitronb's Podman service listens: ``<workspace>/podman/podman.sock``."""
    return workspace_dir(workspace, create=False) / "podman" / "podman.sock"


def engine_candidates(workspace: str | os.PathLike[str] | None = None) -> list[str]:
    """The Docker Engine API URLs tried by :func:`find_engine`, in order."""
    urls = []
    if os.environ.get("DOCKER_HOST"):
        urls.append(os.environ["DOCKER_HOST"])
    for path in (DOCKER_SOCKET, str(podman_socket(workspace)), PODMAN_SYSTEM_SOCKET):
        url = f"unix://{path}"
        if url not in urls:
            urls.append(url)
    return urls


def find_engine(workspace: str | os.PathLike[str] | None = None, *,
                timeout: float = 120) -> "docker.DockerClient | None":
    """A client for the first candidate engine that answers a ping, or None.

    ``timeout`` is the client's per-request timeout (builds stream within it). The client's
    ``engine_url`` attribute says which candidate answered.
    """
    for url in engine_candidates(workspace):
        client = _connect(url, timeout)
        if client is not None:
            return client
    return None


def require_engine(workspace: str | os.PathLike[str] | None = None, *,
                   timeout: float = 120) -> "docker.DockerClient":
    """Like :func:`find_engine`, but raise :class:`EngineUnavailableError` naming what was tried."""
    client = find_engine(workspace, timeout=timeout)
    if client is None:
        tried = ", ".join(engine_candidates(workspace))
        raise EngineUnavailableError(f"no container engine answers (tried {tried}).",
                                     hint=f"Start Docker, set DOCKER_HOST, or: {_PROVISION}")
    return client


def _connect(url: str, timeout: float) -> "docker.DockerClient | None":
    if url.startswith("unix://") and not ping_socket(url[len("unix://"):]):
        return None
    import docker

    try:
        client = docker.DockerClient(base_url=url, timeout=timeout)
        client.ping()
    except Exception:  # any failure means: not this one
        return None
    client.engine_url = url
    return client


def ping_socket(path: str | os.PathLike[str], timeout: float = 3) -> bool:
    """Whether a Docker Engine API answers ``GET /_ping`` on the unix socket ``path``."""
    if not os.path.exists(path):
        return False
    conn = _UnixHTTPConnection(str(path), timeout)
    try:
        conn.request("GET", "/_ping")
        return conn.getresponse().status == 200
    except OSError:
        return False
    finally:
        conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


# --- Podman --------------------------------------------------------------------------------


def podman_env(workspace: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The environment for ``podman`` commands: this environment with ``CONTAINERS_CONF`` set to
    the workspace's ``containers.conf`` (written if needed)."""
    folder = private_dir(workspace_dir(workspace) / "podman")
    conf = folder / "containers.conf"
    if not conf.exists() or conf.read_text(encoding="utf-8") != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF, encoding="utf-8")
    return dict(os.environ, CONTAINERS_CONF=str(conf))


def start_podman_service(workspace: str | os.PathLike[str] | None = None, *,
                         podman: str = "podman", wait: float = 30) -> Path:
    """Start ``podman system service`` on the workspace's socket unless it answers; return it.

    Idempotent. The service runs detached (it outlives this process), logs to
    ``<workspace>/podman/service.log`` and records its pid in ``service.pid``.
    """
    binary = shutil.which(podman)
    if binary is None:
        raise EngineUnavailableError(f"{podman!r} is not installed.", hint=_PROVISION)
    env = podman_env(workspace)
    sock = podman_socket(workspace)
    if len(str(sock)) > 100:
        raise EngineUnavailableError(f"the socket path {sock} is too long for a unix socket.",
                                     hint="Use a workspace with a shorter path.")
    if ping_socket(sock):
        return sock
    sock.unlink(missing_ok=True)
    log_path = sock.parent / "service.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen([binary, "system", "service", "--time=0", f"unix://{sock}"],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    (sock.parent / "service.pid").write_text(f"{process.pid}\n", encoding="utf-8")
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if ping_socket(sock):
            return sock
        if process.poll() is not None:
            raise EngineUnavailableError(
                f"podman system service exited with status {process.returncode}: "
                f"{_tail(log_path)}", hint=f"The full log is {log_path}.")
        time.sleep(0.2)
    raise EngineUnavailableError(f"podman system service does not answer on {sock} after "
                                 f"{wait:g} s.", hint=f"See {log_path}.")


def stop_podman_service(workspace: str | os.PathLike[str] | None = None, *,
                        wait: float = 10) -> bool:
    """Stop the service :func:`start_podman_service` started; return whether one was running."""
    sock = podman_socket(workspace)
    pid_file = sock.parent / "service.pid"
    try:
        pid = int(pid_file.read_text(encoding="utf-8").strip())
    except (FileNotFoundError, ValueError):
        return False
    running = _is_podman_service(pid)
    if running:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + wait
        while _is_podman_service(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _is_podman_service(pid):
            os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    sock.unlink(missing_ok=True)
    return running


def _is_podman_service(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        state = stat.rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError, PermissionError):
        return False
    return state != "Z" and b"system" in cmdline and b"service" in cmdline


def ensure_base_image(name: str = BASE_IMAGE_NAME, cache_dir: str | os.PathLike[str] | None = None,
                      *, podman: str = "podman", mirror: str | None = None,
                      workspace: str | os.PathLike[str] | None = None) -> str:
    """Make sure Podman has the base image ``name``; return ``name``.

    If it is missing, it is imported from the cached root-filesystem tarball
    ``<cache_dir>/base-bookworm.tar``; if that is missing too, it is made with ``debootstrap``
    (root only, a minute or two) and cached, so that next time only the import runs.
    """
    if shutil.which(podman) is None:
        raise EngineUnavailableError(f"{podman!r} is not installed.", hint=_PROVISION)
    env = podman_env(workspace)
    if subprocess.run([podman, "image", "exists", name], env=env).returncode == 0:
        return name
    cache = Path(cache_dir) if cache_dir else DEFAULT_CACHE_DIR
    tarball = cache / f"base-{BASE_SUITE}.tar"
    if not tarball.is_file() or tarball.stat().st_size == 0:
        _debootstrap_tarball(tarball, mirror or os.environ.get("NITRONB_DEBIAN_MIRROR")
                             or DEFAULT_MIRROR)
    _run([podman, "import", "--quiet", "--change", f"ENV=PATH={_PATH}",
          "--change", 'CMD=["python3"]', str(tarball), name], env=env,
         what=f"importing {tarball} as {name}")
    return name


def _debootstrap_tarball(tarball: Path, mirror: str) -> None:
    if shutil.which("debootstrap") is None:
        raise ImageBuildError("debootstrap is not installed, and no cached base image tarball "
                              f"exists at {tarball}.", hint=_PROVISION)
    if os.geteuid() != 0:
        raise ImageBuildError(f"building the base image needs root (debootstrap), and no cached "
                              f"tarball exists at {tarball}.", hint=_PROVISION)
    tarball.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tarball.parent, prefix="rootfs.") as rootfs:
        log = tarball.parent / "debootstrap.log"
        with open(log, "wb") as out:
            done = subprocess.run(["debootstrap", "--variant=minbase",
                                   f"--include={','.join(BASE_PACKAGES)}", BASE_SUITE, rootfs,
                                   mirror], stdout=out, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise ImageBuildError(f"debootstrap {BASE_SUITE} failed: {_tail(log)}",
                                  hint=f"The full log is {log}.")
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "tmp"):
            for path in Path(rootfs, leftover).glob("*"):
                if path.is_file():
                    path.unlink()
        part = tarball.with_name(tarball.name + ".part")
        _run(["tar", "--numeric-owner", "-C", rootfs, "-cf", str(part), "."],
             what=f"archiving the root filesystem into {part}")
        os.replace(part, tarball)


def _run(argv: list[str], *, what: str, env: dict[str, str] | None = None) -> None:
    done = subprocess.run(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        text = done.stdout.decode("utf-8", "replace").strip().splitlines()[-5:]
        raise ImageBuildError(f"{what} failed: {' / '.join(text) or 'no output'}")


def _tail(path: Path, lines: int = 5) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except FileNotFoundError:
        return "no log"
    return " / ".join(text[-lines:]) or "no output"

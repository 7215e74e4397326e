"""The embedded local stack: a small manager for the background services a laptop run needs.

Each service is an entry in a registry: a name, the module run as ``python -m MODULE --workspace
WS --host 127.0.0.1 --port PORT``, a health-check path and the environment variable that fixes
its port. ``up()`` starts what is missing (detached, logs in ``<workspace>/local/logs/``) and
waits until each answers its health check; ``status()`` reports; ``down()`` stops what ``up()``
started: SIGTERM to every service at once, then each has its shutdown grace
(``$NITRONB_HTTP_SHUTDOWN_TIMEOUT``, default 30 s, when it started) plus ``STOP_MARGIN`` s to
finish the requests in flight before it gets SIGKILL, which ``down()`` reports. Pids, ports
and URLs are kept in ``<workspace>/local/state.json``; a restart reuses the remembered ports
when they are free. A service whose module is not installed is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from nitronb.errors import LocalStackError
from nitronb.workspace import private_dir, workspace_dir

HOST = "127.0.0.1"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 10.0  # s after SIGKILL (and after SIGTERM when no grace is known)
STOP_MARGIN = 5.0  # s given beyond a service's shutdown grace before SIGKILL
#: services this process started, kept so that they are reaped when they stop
_CHILDREN: dict[int, subprocess.Popen] = {}


@dataclass(frozen=True)
class Service:
    """One background service of the local stack."""

    name: str
    module: str
    health_path: str
    port_env: str
    #: run in the workspace before the first start (e.g. create credentials)
    prepare: Callable[[Path], None] | None = None

    def available(self) -> bool:
        """Whether the service's module is installed."""
        try:
            return importlib.util.find_spec(self.module) is not None
        except ModuleNotFoundError:
            return False

    def argv(self, workspace: Path, port: int) -> list[str]:
        return [sys.executable, "-m", self.module, "--workspace", str(workspace),
                "--host", HOST, "--port", str(port)]


def _prepare_s3(workspace: Path) -> None:
    from nitronb.local.s3gate import load_credentials

    load_credentials(workspace, create=True)


#: the services, in start order; later work adds entries with ``register``
SERVICES: dict[str, Service] = {}


def register(service: Service) -> None:
    """Add (or replace) a service of the local stack."""
    SERVICES[service.name] = service


register(Service("s3", "nitronb.local.s3gate", "/_nitronb/health", "NITRONB_S3_PORT", _prepare_s3))
register(Service("manager", "nitronb.ccm.server", "/v1/sys/health", "NITRONB_MANAGER_PORT"))
register(Service("node-agent", "nitronb.enclave.node_agent_api", "/health",
                 "NITRONB_NODE_AGENT_PORT"))


def services() -> list[Service]:
    """The services this installation can run, in start order."""
    return [s for s in SERVICES.values() if s.available()]


# --- state ----------------------------------------------------------------------------------


def _local_dir(workspace: str | os.PathLike[str] | None) -> Path:
    return private_dir(workspace_dir(workspace) / "local")


def _state_path(folder: Path) -> Path:
    return folder / "state.json"


def _read_state(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads(_state_path(folder).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return {"services": {}}
    data.setdefault("services", {})
    return data


def _write_state(folder: Path, state: dict[str, Any]) -> None:
    tmp = _state_path(folder).with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
    os.replace(tmp, _state_path(folder))


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    with open(folder / ".lock", "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- processes ------------------------------------------------------------------------------


def _is_ours(pid: int | None, module: str) -> bool:
    """Whether ``pid`` is alive and still runs ``module`` (a recycled pid is not ours)."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True  # no /proc: trust the pid
    if module.encode() not in cmdline:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # as the servers themselves bind: a port held only by TIME_WAIT connections is free
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
    return True


#: ports chosen for services lie below the kernel's ephemeral range, where outgoing connections
#: take their ports, so that a remembered port is still free at the next ``up``
_SERVICE_PORTS = range(20000, 32768)


def _free_port() -> int:
    import random

    for port in random.sample(_SERVICE_PORTS, 64):
        if _port_free(port):
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _choose_port(service: Service, requested: int | None, remembered: int | None) -> int:
    configured = requested or os.environ.get(service.port_env)
    if configured:
        port = int(configured)
        if not _port_free(port):
            raise LocalStackError(
                f"port {port} for the local {service.name} service is taken.",
                hint=f"Free it, or choose another port with {service.port_env}.")
        return port
    if remembered and _port_free(int(remembered)):
        return int(remembered)
    return _free_port()


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _start(service: Service, workspace: Path, folder: Path, port: int) -> dict[str, Any]:
    logs = private_dir(folder / "logs")
    log_path = logs / f"{service.name}.log"
    if service.prepare is not None:
        service.prepare(workspace)
    argv = service.argv(workspace, port)
    with open(log_path, "ab") as log:
        log.write(f"--- starting {service.name} on {HOST}:{port}\n".encode())
        log.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True, cwd=workspace, close_fds=True)
    _CHILDREN[proc.pid] = proc
    base = f"http://{HOST}:{port}"
    health = base + service.health_path
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise LocalStackError(
                f"the local {service.name} service exited (code {proc.returncode}) while "
                f"starting; its log is {log_path}:\n{_tail(log_path)}",
                hint="Fix what the log says, then run `nitronb local up` again.")
        if _healthy(health, timeout=1.0):
            return {"pid": proc.pid, "port": port, "url": base, "log": str(log_path),
                    "argv": argv, "shutdown_timeout": _grace()}
        time.sleep(0.2)
    _terminate(proc.pid, service.module)
    raise LocalStackError(
        f"the local {service.name} service did not answer {health} within "
        f"{START_TIMEOUT:.0f} s; its log is {log_path}:\n{_tail(log_path)}",
        hint="Look at the log, then run `nitronb local up` again.")


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (no such process, or a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
        return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (OSError, IndexError):
        return False


def _reaped(pid: int) -> bool:
    """Collect ``pid`` if it is our child and has exited; whether it has."""
    child = _CHILDREN.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        del _CHILDREN[pid]
        return True
    with contextlib.suppress(ChildProcessError):
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    return False


def _grace() -> float:
    """The shutdown grace (s) a service started now gets: ``$NITRONB_HTTP_SHUTDOWN_TIMEOUT``,
    else the servers' default."""
    from nitronb.http_server import Limits

    with contextlib.suppress(ValueError):
        return max(0.0, float(os.environ.get("NITRONB_HTTP_SHUTDOWN_TIMEOUT") or ""))
    return Limits().shutdown_timeout


def _signal(pid: int, sig: int) -> bool:
    """Send ``sig`` to the service's process group; whether it was still there."""
    try:
        os.killpg(pid, sig)  # the service leads its own session and group
    except ProcessLookupError:
        return False
    except PermissionError:
        os.kill(pid, sig)
    return True


def _stop(processes: dict[int, tuple[str, float]]) -> dict[int, float]:
    """Stop ``{pid: (module, grace s)}``: SIGTERM to all at once, then SIGKILL to each one
    still running ``grace + STOP_MARGIN`` s later. Return ``{pid: seconds waited}`` of those
    killed. LocalStackError when one outlives SIGKILL by ``STOP_TIMEOUT`` s."""
    waiting = {pid: grace + STOP_MARGIN for pid, (module, grace) in processes.items()
               if _is_ours(pid, module) and _signal(pid, signal.SIGTERM)}
    started, killed = time.monotonic(), {}
    while waiting:
        elapsed = time.monotonic() - started
        for pid, allowed in list(waiting.items()):
            if _reaped(pid) or _gone(pid):
                del waiting[pid]
            elif elapsed >= allowed:
                del waiting[pid]
                if _signal(pid, signal.SIGKILL):
                    killed[pid] = allowed
        time.sleep(0.05)
    for pid in killed:
        deadline = time.monotonic() + STOP_TIMEOUT
        while not (_reaped(pid) or _gone(pid)):
            if time.monotonic() > deadline:
                raise LocalStackError(f"could not stop process {pid} "
                                      f"({processes[pid][0]}).",
                                      hint=f"Stop it by hand: kill -9 {pid}")
            time.sleep(0.05)
    return killed


def _terminate(pid: int, module: str, grace: float = STOP_TIMEOUT - STOP_MARGIN) -> None:
    """Stop one service (see :func:`_stop`)."""
    _stop({pid: (module, grace)})


# --- the verbs ------------------------------------------------------------------------------


def _started_as(service: Service | None, entry: dict[str, Any]) -> str:
    """The module a service's process was started with (``python -m MODULE``, as its state
    recorded it): a stack started by an earlier nitronb may run a module since renamed."""
    argv = entry.get("argv")
    if isinstance(argv, list) and len(argv) > 2 and argv[1] == "-m" and isinstance(argv[2], str):
        return argv[2]
    return service.module if service is not None else ""


def _describe(service: Service, entry: dict[str, Any] | None) -> dict[str, Any]:
    entry = entry or {}
    started_as = _started_as(service, entry)
    running = _is_ours(entry.get("pid"), started_as)
    # a process of a renamed module is an older nitronb's: unhealthy, so that up() replaces it
    healthy = (running and started_as == service.module
               and _healthy(entry["url"] + service.health_path))
    return {
        "state": "running" if healthy else ("unhealthy" if running else "stopped"),
        "pid": entry.get("pid") if running else None,
        "port": entry.get("port"),
        "url": entry.get("url") if running else None,
        "log": entry.get("log"),
    }


def status(workspace: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each available service's ``{"state": running|unhealthy|stopped, "pid", "port", "url", "log"}``."""
    folder = _local_dir(workspace)
    state = _read_state(folder)
    return {s.name: _describe(s, state["services"].get(s.name)) for s in services()}


def up(workspace: str | os.PathLike[str] | None = None, *,
       ports: dict[str, int] | None = None,
       only: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """Start every service (or those named in ``only``) that is not running; return ``status()``.

    Idempotent. ``ports`` fixes a service's port (else ``$NITRONB_<NAME>_PORT``, else the port
    it had last time if free, else a free one).
    """
    ws = workspace_dir(workspace)
    folder = _local_dir(ws)
    wanted = None if only is None else set(only)
    unknown = (wanted or set()) - set(SERVICES)
    if unknown:
        raise LocalStackError(f"the local stack has no service named {', '.join(sorted(unknown))}.",
                              hint=f"Known services: {', '.join(SERVICES)}.")
    with _locked(folder):
        state = _read_state(folder)
        for service in services():
            if wanted is not None and service.name not in wanted:
                continue
            entry = state["services"].get(service.name) or {}
            described = _describe(service, entry)
            if described["state"] == "running":
                continue
            if described["state"] == "unhealthy":
                _terminate(entry["pid"], _started_as(service, entry))
            port = _choose_port(service, (ports or {}).get(service.name), entry.get("port"))
            state["services"][service.name] = _start(service, ws, folder, port)
            _write_state(folder, state)
    return status(ws)


def down(workspace: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Stop every service ``up()`` started (idempotent; SIGTERM to all at once, SIGKILL after
    each one's shutdown grace + ``STOP_MARGIN`` s); return ``status()``, where a service that
    had to be killed also has ``"killed": "<message>"``."""
    ws = workspace_dir(workspace)
    folder = _local_dir(ws)
    with _locked(folder):
        state = _read_state(folder)
        processes, names = {}, {}
        for name, entry in state["services"].items():
            module = _started_as(SERVICES.get(name), entry)
            if entry.get("pid"):
                grace = entry.get("shutdown_timeout")
                processes[int(entry["pid"])] = (module, float(grace) if isinstance(
                    grace, (int, float)) else _grace())
                names[int(entry["pid"])] = name
        killed = _stop(processes)
        for entry in state["services"].values():
            entry["pid"] = None
            entry["url"] = None
        _write_state(folder, state)
    report = status(ws)
    for pid, waited in killed.items():
        if names[pid] in report:
            report[names[pid]]["killed"] = (
                f"still running {waited:g} s after SIGTERM: killed; requests in flight were "
                f"cut (its log: {report[names[pid]]['log']})")
    return report


def ensure_up(workspace: str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Start the stack if any service is not running; return ``status()``."""
    current = status(workspace)
    if all(s["state"] == "running" for s in current.values()):
        return current
    return up(workspace)


def url(service_name: str, workspace: str | os.PathLike[str] | None = None) -> str:
    """The base URL (``http://127.0.0.1:PORT``) of a running local service."""
    if service_name not in SERVICES:
        raise LocalStackError(f"the local stack has no service named {service_name!r}.",
                              hint=f"Known services: {', '.join(SERVICES)}.")
    folder = _local_dir(workspace)
    entry = _read_state(folder)["services"].get(service_name) or {}
    if not _is_ours(entry.get("pid"), SERVICES[service_name].module):
        raise LocalStackError(f"the local {service_name} service is not running.",
                              hint="Start the local stack with `nitronb local up`.")
    return entry["url"]

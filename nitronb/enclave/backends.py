"""Where an enclave runs: a container engine (Docker Engine API) or a private process.

Each backend measures the image it is asked to launch — the PCRs the node agent attests — and
starts it with the launcher's environment. A handle has ``poll()``, ``wait()`` and ``stop()``.

An enclave outlives the node agent that started it, and its end is known afterwards: a process
enclave runs under :mod:`nitronb.enclave.supervisor`, which records its exit status in the enclave's
folder; a container is found again by its ``nitronb.enclave`` label. :func:`adopt` gives a
restarted node agent a handle on an enclave an earlier one started.
"""

from __future__ import annotations

import os
import posixpath
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from nitronb.errors import EngineUnavailableError, ImageBuildError, ValidationError
from nitronb.enclave.measure import Measurements

STOP_TIMEOUT = 10
#: how often a restarted node agent looks whether an adopted process enclave has ended (s)
ADOPTED_POLL = 0.2
#: the code of an enclave that ended with no exit status anyone recorded
LOST = -1000


class Handle(Protocol):
    def poll(self) -> int | None: ...
    def wait(self) -> int: ...
    def stop(self) -> None: ...


class Backend(Protocol):
    name: str

    def prepare(self, image: str, folder: Path) -> "Prepared":
        """Measure ``image`` as it will run (a private copy, or a fixed image id)."""

    def start(self, prepared: "Prepared", env: dict[str, str], folder: Path,
              log_path: Path) -> Handle:
        """Start the prepared image's own measured command under the launcher."""


@dataclass(frozen=True)
class Prepared:
    """An image measured as it will run: its PCRs and what the backend launches."""

    measurements: Measurements
    launch: dict


# --- process backend ------------------------------------------------------------------------


class _ProcessHandle:
    """A supervised process enclave this node agent started: its code is the one the supervisor
    recorded (the enclave's, not the supervisor's own)."""

    def __init__(self, process: subprocess.Popen, cleanup: list[Path],
                 folder: Path | None = None) -> None:
        self.process = process
        self.cleanup = cleanup
        self.folder = folder
        self._lock = threading.Lock()
        self._cleaned = False

    def poll(self) -> int | None:
        code = self.process.poll()
        if code is not None:
            self._clean()
            return self._recorded(code)
        return None

    def wait(self) -> int:
        code = self.process.wait()
        self._clean()
        return self._recorded(code)

    def _recorded(self, code: int) -> int:
        from nitronb.enclave.supervisor import ENDED, read_record

        ended = read_record(self.folder, ENDED) if self.folder is not None else None
        if ended is not None and isinstance(ended.get("exit_code"), int):
            return ended["exit_code"]
        return code

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._clean()

    def _clean(self) -> None:
        from nitronb.enclave.supervisor import remove

        with self._lock:
            if self._cleaned:
                return
            self._cleaned = True
        for path in self.cleanup:
            remove(path)


class _AdoptedProcessHandle(_ProcessHandle):
    """A supervised process enclave an earlier node agent started (not this one's child)."""

    def __init__(self, pid: int, folder: Path, cleanup: list[Path]) -> None:
        super().__init__(None, cleanup, folder)  # type: ignore[arg-type]
        self.pid = pid

    def _ended(self) -> int | None:
        from nitronb.enclave.supervisor import ENDED, alive, read_record

        if alive(self.pid, self.folder):
            return None
        ended = read_record(self.folder, ENDED)
        code = ended.get("exit_code") if ended else None
        self._clean()
        return code if isinstance(code, int) else LOST

    def poll(self) -> int | None:
        return self._ended()

    def wait(self) -> int:
        while (code := self._ended()) is None:
            time.sleep(ADOPTED_POLL)
        return code

    def stop(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if self._ended() is not None:
                return
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + STOP_TIMEOUT
            while time.monotonic() < deadline and self._ended() is None:
                time.sleep(ADOPTED_POLL)
        self._clean()


class Ended:
    """An enclave that had already ended when the node agent looked for it."""

    def __init__(self, code: int) -> None:
        self.code = code

    def poll(self) -> int:
        return self.code

    def wait(self) -> int:
        return self.code

    def stop(self) -> None:
        pass


_SPAWNER: ThreadPoolExecutor | None = None
_SPAWNER_LOCK = threading.Lock()


def _spawner() -> ThreadPoolExecutor:
    global _SPAWNER
    with _SPAWNER_LOCK:
        if _SPAWNER is None:
            _SPAWNER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nitronb-spawn")
        return _SPAWNER


class ProcessBackend:
    """Runs a prepared image folder (``nitronb.enclave.image.prepare_process_image``) as a process group.
    The folder is copied into the enclave's private folder and the copy is measured: what runs is
    exactly what was measured, whatever happens to the original meanwhile.

    With bubblewrap the enclave runs in the sandbox of :mod:`nitronb.enclave.sandbox`; without it, only
    an image laid out as nitronb's own app runs, unsandboxed, with a warning in its log
    (:func:`nitronb.enclave.sandbox.unsandboxed_refusal`). The enclave's node-agent token reaches the
    launcher over an inherited pipe, never through an environment."""

    name = "process"

    def prepare(self, image: str, folder: Path) -> Prepared:
        from nitronb.enclave import sandbox
        from nitronb.enclave.process_image import verify_process_image
        from nitronb.enclave.measure import tree_files

        source = verify_process_image(image)  # refuse an altered folder with a clear message
        copy = folder / "private" / source.measurements.pcr0[:16]
        shutil.copytree(image, copy)
        os.chmod(folder / "private", 0o700)
        prepared = verify_process_image(copy)
        if prepared.measurements != source.measurements:
            raise ImageBuildError(f"the image {image} changed while it was being launched.")
        context = tree_files(copy / "app")
        layout = sandbox.read_layout(context)
        sandbox.check_command(layout)
        bwrap = sandbox.find_bwrap()
        if bwrap is None:
            why = sandbox.unsandboxed_refusal(layout, context)
            if why is not None:
                raise sandbox.SandboxUnavailableError(
                    f"the image {image} needs the bubblewrap sandbox ({why}), and bubblewrap "
                    "is not installed.", hint=sandbox.BWRAP_HINT)
        return Prepared(prepared.measurements, {"root": str(copy),
                                                "module": prepared.launcher_module,
                                                "command": list(layout.command),
                                                "layout": layout, "bwrap": bwrap})

    def start(self, prepared: Prepared, env: dict[str, str], folder: Path, log_path: Path
              ) -> _ProcessHandle:
        from nitronb.enclave import sandbox

        root = Path(prepared.launch["root"])
        layout = prepared.launch.get("layout") or sandbox.Layout(
            command=list(prepared.launch["command"]))
        bwrap = prepared.launch.get("bwrap")
        if not layout.command:
            raise ImageBuildError("the image's Dockerfile names no exec-form CMD to run.")
        # run the measured copy of the launcher by its path: an import by module name could
        # resolve to an installed nitronb instead of the files that were measured
        module = prepared.launch["module"]
        script = root / "launcher" / (module.replace(".", "/") + ".py")
        if not script.is_file():
            raise ImageBuildError(f"the image has no launcher {module}.")
        env = dict(env)
        token = env.pop("NITRONB_ENCLAVE_TOKEN", "")
        private = folder / "private"
        app_config = private / "app-config"
        work = private / "work"
        for path in (work, private / "tmp", app_config, private / "bin"):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
        read_end, write_end = os.pipe()
        try:
            os.write(write_end, token.encode("ascii"))
        finally:
            os.close(write_end)
        env["NITRONB_ENCLAVE_TOKEN_FD"] = str(read_end)
        if bwrap:
            from nitronb.enclave.image import launcher_command

            inside = {"PATH": sandbox.DEFAULT_PATH, "LANG": "C.UTF-8", "HOME": "/root",
                      **layout.env, **env, "APP_CONFIG_DIR": sandbox.APP_CONFIG_PATH}
            argv = sandbox.bwrap_command(
                bwrap, image_root=root, layout=layout, app_config=app_config,
                wrapper=sandbox.python_wrapper(private / "bin"), env=inside,
                argv=[*launcher_command(module, root=f"{sandbox.IMAGE_PATH}/launcher"),
                      *layout.command])
            environment, cwd, warning = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}, \
                work, None
        else:
            app_command = [self._host_path(root, layout, part) for part in layout.command]
            if app_command[0] in ("python3", "python"):
                app_command[0] = sys.executable
            argv = [sys.executable, "-I", str(script), *app_command]
            environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
                           "HOME": str(work), "TMPDIR": str(private / "tmp"), **layout.env,
                           **env, "APP_CONFIG_DIR": str(app_config)}
            cwd = work
            warning = ("[enclave-os] warning: bubblewrap is not installed, so this enclave "
                       "runs unsandboxed: it sees your files, your other processes and their "
                       "environments, and what it writes outside its private folder stays; "
                       "install bubblewrap (`apt-get install bubblewrap`) to isolate it.\n")
        from nitronb.enclave import supervisor

        # the supervisor, not this node agent, is the enclave's parent: it records the exit
        # status in the enclave's folder and cleans the private folder even if this agent dies
        argv = supervisor.command(folder, argv, clean=[private], pass_fd=read_end)
        log = open(log_path, "ab", buffering=0)
        try:
            if warning:
                log.write(warning.encode("utf-8"))
            process = _spawner().submit(
                subprocess.Popen, argv, cwd=cwd, env=environment, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                pass_fds=(read_end,)).result()
        finally:
            log.close()
            os.close(read_end)
        return _ProcessHandle(process, [private], folder)

    @staticmethod
    def _host_path(root: Path, layout, part: str) -> str:
        # a file of the image is its measured copy: the command runs what was measured
        where = posixpath.normpath(posixpath.join(layout.workdir, part)) \
            if part.startswith(("/", "./")) or "/" in part else None
        if where in layout.files:
            return str(root / "app" / layout.files[where])
        if part == "/app" or part.startswith("/app/"):
            return str(root / "app" / part[len("/app"):].lstrip("/"))
        return part


# --- container backend ----------------------------------------------------------------------


#: the private folder, under an enclave's folder, that holds its node-agent token for the
#: container backend; it is bind-mounted read-only at ``CONTAINER_TOKEN_DIR`` (the folder, not the
#: file: the node agent's removal of the file once the token is used shows inside the container)
TOKEN_FOLDER = "enclave-token"
TOKEN_FILE = "token"
CONTAINER_TOKEN_DIR = "/run/nitronb-enclave"


def _write_token_folder(folder: Path, token: str) -> Path:
    """``folder/TOKEN_FOLDER/TOKEN_FILE`` holding ``token``: the folder 0700, the file 0600."""
    private = folder / TOKEN_FOLDER
    private.mkdir(mode=0o700)
    os.chmod(private, 0o700)
    fd = os.open(private / TOKEN_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with open(fd, "w", encoding="utf-8") as out:
        out.write(token + "\n")
    return private


class _ContainerHandle:
    def __init__(self, container, log_path: Path, cleanup: list[Path] | None = None, *,
                 whole_log: bool = False) -> None:
        self.container = container
        self.log_path = log_path
        self.cleanup = cleanup or []
        self.code: int | None = None
        #: write the container's whole log again (an adopted container: the engine keeps it all)
        self._whole_log = whole_log
        self._done = threading.Event()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        if self._whole_log:
            self.log_path.write_bytes(b"")
        with open(self.log_path, "ab", buffering=0) as log:
            try:
                for chunk in self.container.logs(stream=True, follow=True):
                    log.write(chunk)
            except Exception:  # noqa: BLE001 - the engine closed the stream
                pass
        try:
            self.code = int(self.container.wait().get("StatusCode", 1))
        except Exception:  # noqa: BLE001
            self.code = 1
        try:
            self.container.remove(force=True, v=True)  # its anonymous volumes too
        except Exception:  # noqa: BLE001
            pass
        for path in self.cleanup:
            shutil.rmtree(path, ignore_errors=True)
        self._done.set()

    def poll(self) -> int | None:
        return self.code if self._done.is_set() else None

    def wait(self) -> int:
        self._done.wait()
        return self.code if self.code is not None else 1

    def stop(self) -> None:
        try:
            self.container.stop(timeout=STOP_TIMEOUT)
        except Exception:  # noqa: BLE001 - already gone
            pass
        self._done.wait(STOP_TIMEOUT * 2)


class ContainerBackend:
    """Runs an enclave image through the Docker Engine API (Docker or Podman's service), with the
    host's network so that the enclave reaches the node agent and the manager on 127.0.0.1.
    The enclave's node-agent token is not in the container's environment: it is a 0600 file in a
    private folder bind-mounted read-only at ``/run/nitronb-enclave``, removed by the node agent
    once the token is used and, with its folder, when the container ends."""

    name = "container"

    def __init__(self, engine) -> None:
        self.engine = engine

    def prepare(self, image: str, folder: Path) -> Prepared:
        from nitronb.enclave.image import inspect_container_image

        measurements, launch = inspect_container_image(image, engine=self.engine)
        return Prepared(measurements, launch)

    def start(self, prepared: Prepared, env: dict[str, str], folder: Path, log_path: Path
              ) -> _ContainerHandle:
        launch = prepared.launch
        env = dict(env)
        token = env.pop("NITRONB_ENCLAVE_TOKEN", None)
        volumes, cleanup = None, []
        if token:
            # never in the container's environment: `inspect` and /proc/PID/environ show that
            cleanup.append(_write_token_folder(folder, token))
            volumes = {str(cleanup[0]): {"bind": CONTAINER_TOKEN_DIR, "mode": "ro"}}
            env["NITRONB_ENCLAVE_TOKEN_FILE"] = f"{CONTAINER_TOKEN_DIR}/{TOKEN_FILE}"
        try:
            container = self.engine.containers.run(
                launch["image_id"], entrypoint=launch["entrypoint"], command=launch["command"],
                environment=env, network_mode="host", volumes=volumes,
                detach=True, labels={"nitronb.enclave": env.get("NITRONB_ENCLAVE_ID", "")})
        except BaseException:
            for path in cleanup:
                shutil.rmtree(path, ignore_errors=True)
            raise
        return _ContainerHandle(container, log_path, cleanup)


def adopt(backend: str, enclave_id: str, folder: Path, workspace: Path) -> Handle | None:
    """A handle on an enclave an earlier node agent started, found from what outlives that
    agent: the supervisor's records in ``folder`` (process), the container labelled with
    ``enclave_id`` (container). An enclave that has ended gives a handle whose ``poll()``
    returns its code at once (:data:`LOST` when nothing recorded it). None when the container
    engine does not answer (ask again later).
    """
    from nitronb.enclave.supervisor import ENDED, STARTED, alive, read_record, remove

    if backend == "process":
        private = folder / "private"
        started = read_record(folder, STARTED)
        pid = started.get("pid") if started else None
        if isinstance(pid, int) and alive(pid, folder):
            return _AdoptedProcessHandle(pid, folder, [private])
        ended = read_record(folder, ENDED)
        remove(private)
        code = ended.get("exit_code") if ended else None
        return Ended(code if isinstance(code, int) else LOST)
    from nitronb.enclave.engine import find_engine

    engine = find_engine(workspace, timeout=30)
    if engine is None:
        return None
    found = engine.containers.list(all=True, filters={"label": f"nitronb.enclave={enclave_id}"})
    if not found:
        shutil.rmtree(folder / TOKEN_FOLDER, ignore_errors=True)
        return Ended(LOST)
    return _ContainerHandle(found[0], folder / "enclave.log", [folder / TOKEN_FOLDER],
                            whole_log=True)


def choose_backend(name: str, image: str, workspace: Path) -> Backend:
    """The backend for ``image``: ``auto`` picks the process backend for an image folder and the
    container engine otherwise."""
    if name not in ("auto", "process", "container"):
        raise ValidationError(f"unknown backend {name!r}; choose auto, process or container.")
    is_folder = Path(image).is_dir()
    if name == "process" or (name == "auto" and is_folder):
        if not is_folder:
            raise ValidationError(f"{image} is not a prepared image folder; the process backend "
                                  "runs folders made by `prepare_process_image`.")
        return ProcessBackend()
    from nitronb.enclave.engine import find_engine

    engine = find_engine(workspace)
    if engine is None:
        raise EngineUnavailableError(
            f"no container engine is reachable to run {image}.",
            hint="Start Docker or Podman's service (scripts/provision-podman.sh), or run a "
                 "process image folder with the process backend.")
    return ContainerBackend(engine)

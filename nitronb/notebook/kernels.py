"""Kernels for the walk-through's notebooks: one fresh kernel per notebook, the next ones started
(and their imports warmed) while the current notebook runs, and every kernel this process
started stopped again, also when the run is interrupted.

A kernel is a ``jupyter_client`` kernel manager handed to papermill (``km=``), which passes it on
to nbclient. nbclient neither shuts down a kernel it was given nor closes the client it made for
it, so :class:`KernelChain` does both. Imports nothing from nitronb (jupyter_client lazily).
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

T = TypeVar("T")

#: run silently in a kernel before its notebook: imports only, no name bound, nothing stored or
#: shown (``silent``), so the notebook still finds a fresh namespace and execution count 1
WARM_UP = ("__import__('nitronb.notebook.steps'); __import__('nitronb.notebook.displays'); "
           "__import__('nitronb.notebook.widgets'); __import__('boto3'); __import__('requests')")

#: kernels kept started ahead of the notebook running (a kernel boots in about a second, longer
#: than the shortest notebooks run)
AHEAD = 2

_live: dict[int, Any] = {}
_live_lock = threading.Lock()
#: set by kill_all: the process is stopping and starts no kernel any more
_closed = threading.Event()


class KernelChain:
    """Kernels of one kernelspec, started ahead of need, all stopped on leaving.

    ``cwd`` is the kernels' working folder, ``env`` extra environment variables, ``log`` the
    file their stderr is appended to. Use as a context manager: every kernel still running when
    the block ends (a notebook failed, the run was interrupted) is stopped.
    """

    def __init__(self, kernel_name: str, *, cwd: str | os.PathLike[str] | None = None,
                 env: Mapping[str, str] | None = None, log: str | os.PathLike[str] | None = None,
                 warm_up: str = WARM_UP) -> None:
        self.kernel_name = kernel_name
        self.cwd = str(cwd or os.getcwd())
        self.env = dict(env or {})
        self.log = Path(log) if log else None
        self.warm_up = warm_up
        self._mine: list[Any] = []
        self._ahead: list[Any] = []
        self._stopping: list[Any] = []

    def start(self):
        """Start a kernel now and send it the warm-up imports; returns its (asynchronous)
        kernel manager, for papermill's ``km=``. Raises ``RuntimeError`` (jupyter_client's)
        if the kernel cannot be launched."""
        from jupyter_core.utils import run_sync

        if _closed.is_set():
            raise RuntimeError("the run was interrupted; no kernel is started any more")
        km = _manager_class()(kernel_name=self.kernel_name)
        kwargs: dict[str, Any] = {"cwd": self.cwd, "env": {**os.environ, **self.env}}
        stderr = open(self.log, "ab") if self.log else None  # noqa: SIM115 - closed below
        if stderr is not None:
            kwargs["stderr"] = stderr
        try:
            run_sync(km.start_kernel)(**kwargs)
        finally:
            if stderr is not None:
                stderr.close()  # the kernel holds its own copy of the descriptor
        self._mine.append(km)
        with _live_lock:
            _live[id(km)] = km
        if _closed.is_set():  # interrupted while it started
            _kill(km)
            raise RuntimeError("the run was interrupted; no kernel is started any more")
        # nbclient's client, made now: its sockets connect and subscribe while the kernel
        # boots, so that nbclient's readiness check passes at its first kernel_info
        client = km.client()  # kept in km.clients, closed by stop()
        client.shell_channel, client.iopub_channel  # noqa: B018 - creating them connects them
        if self.warm_up:
            client.execute(self.warm_up, silent=True, store_history=False, allow_stdin=False)
        km._nitronb_client = client
        return km

    def take(self):
        """The kernel started ahead (:meth:`start_ahead`), else one started now."""
        return self._ahead.pop(0) if self._ahead else self.start()

    def start_ahead(self, count: int = 1) -> None:
        """Have ``count`` kernels started for :meth:`take` to hand out later (start the ones
        missing)."""
        while len(self._ahead) < count:
            self._ahead.append(self.start())

    def stop(self, km) -> None:
        """Ask ``km``'s kernel to shut down and return at once; the chain waits for it (and
        kills it if it lingers) when it reaps stopped kernels and on leaving."""
        from jupyter_core.utils import run_sync

        for client in km.clients:  # nbclient leaves open the client of a kernel it was given
            client.stop_channels()
        km.clients.clear()
        if km in self._ahead:
            self._ahead.remove(km)
        try:
            run_sync(km.request_shutdown)()
            self._stopping.append(km)
        except Exception:  # noqa: BLE001 - the kernel may be gone already; kill what is left
            self._forget(km)
            _kill(km)
        self.reap(wait=False)

    def reap(self, *, wait: bool = True) -> None:
        """Finish the shutdown of the stopped kernels that have exited (all of them if
        ``wait``: up to a few seconds each, then killed)."""
        from jupyter_core.utils import run_sync

        for km in list(self._stopping):
            process = getattr(km.provisioner, "process", None)
            if not wait and process is not None and process.poll() is None:
                continue
            self._stopping.remove(km)
            try:
                run_sync(km.finish_shutdown)()
                run_sync(km.cleanup_resources)()
            except Exception:  # noqa: BLE001 - make sure it is gone whatever went wrong
                _kill(km)
            finally:
                self._forget(km)

    def _forget(self, km) -> None:
        if km in self._mine:
            self._mine.remove(km)
        with _live_lock:
            _live.pop(id(km), None)

    def __enter__(self) -> "KernelChain":
        return self

    def __exit__(self, *exc: object) -> None:
        for km in [k for k in self._mine if k not in self._stopping]:
            self.stop(km)
        self.reap(wait=True)


@functools.cache
def _manager_class():
    """jupyter_client's asynchronous kernel manager, keeping the clients made for it (nbclient
    makes one and, for a kernel it was given, leaves its channels and heartbeat thread open),
    whose clients are :func:`_client_class`'s."""
    from jupyter_client import AsyncKernelManager

    class Manager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.client_factory = _client_class()
            self.clients: list[Any] = []
            self._nitronb_client: Any = None  # made by KernelChain.start for nbclient

        def client(self, **kwargs: Any):
            if self._nitronb_client is not None:
                made, self._nitronb_client = self._nitronb_client, None
                return made
            made = super().client(**kwargs)
            self.clients.append(made)
            return made

    return Manager


@functools.cache
def _client_class():
    """jupyter_client's asynchronous kernel client, whose readiness check (the one nbclient
    makes before the first cell) ends once the kernel answered ``kernel_info`` and IOPub is
    connected, as jupyter_client's does, without then waiting for 0.2 s of silence on IOPub:
    nbclient keeps only the messages its own requests caused, so none needs flushing."""
    import time
    from queue import Empty

    from jupyter_client import AsyncKernelClient

    class Client(AsyncKernelClient):
        async def wait_for_ready(self, timeout: float | None = None) -> None:
            deadline = time.monotonic() + (float("inf") if timeout is None else timeout)
            while True:
                self.kernel_info()
                try:
                    reply = await self.shell_channel.get_msg(timeout=1)
                except Empty:
                    reply = None
                if reply is not None and reply["msg_type"] == "kernel_info_reply":
                    try:
                        await self.iopub_channel.get_msg(timeout=0.2)
                    except Empty:
                        pass  # IOPub not connected yet: ask again
                    else:
                        self._handle_kernel_info_reply(reply)
                        return
                if not await self.is_alive():
                    raise RuntimeError("Kernel died before replying to kernel_info")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"Kernel didn't respond in {timeout} seconds")

    return Client


def _kill(km) -> None:
    """Kill a kernel's process group at once and remove its connection file."""
    provisioner = getattr(km, "provisioner", None)
    pgid, pid = getattr(provisioner, "pgid", None), getattr(provisioner, "pid", None)
    try:
        if pgid and pgid != os.getpgrp():  # a kernel has a session of its own
            os.killpg(pgid, signal.SIGKILL)
        elif pid:
            os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process = getattr(provisioner, "process", None)
    if process is not None:
        try:
            process.wait(timeout=5)
        except Exception:  # noqa: BLE001 - reaped elsewhere, or not a child
            pass
    try:
        Path(km.connection_file).unlink()
    except (OSError, TypeError, ValueError):
        pass


def kill_all() -> int:
    """Kill every kernel this process started and has not stopped yet (from any thread), and
    start none any more: what an interrupted run calls before it exits. Returns how many
    there were."""
    _closed.set()
    with _live_lock:
        kernels = list(_live.values())
        _live.clear()
    for km in kernels:
        _kill(km)
    return len(kernels)


def in_worker(function: Callable[[], T], *, idle: Callable[[], None] | None = None,
              on_interrupt: Callable[[], None] | None = None) -> T:
    """``function()`` run in a worker thread while this thread waits, so that SIGINT and
    SIGTERM reach this thread's handlers (nbclient installs its own handlers, and resets them
    to the defaults afterwards, only when it runs in the main thread). ``idle()`` is called
    about every quarter second while waiting (e.g. to refresh a display). Whatever interrupts
    the wait (``KeyboardInterrupt``, the CLI's exception for SIGTERM) calls ``on_interrupt()``
    and kills every kernel this process started (:func:`kill_all`) before it propagates.
    Returns what ``function`` returns; raises what it raises."""
    outcome: dict[str, Any] = {}
    finished = threading.Event()  # not Thread.join: an interrupted join may return early

    def work() -> None:
        try:
            outcome["value"] = function()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            outcome["error"] = exc
        finally:
            finished.set()

    threading.Thread(target=work, name="nitronb-notebooks", daemon=True).start()
    try:
        while not finished.wait(0.25):
            if idle:
                idle()
    except BaseException:
        if on_interrupt:
            on_interrupt()
        # the kernels die on purpose: nbclient's "Kernel died …" lines (papermill's logger)
        # would only garble the output
        logging.getLogger("papermill").disabled = True
        kill_all()
        finished.wait(15)
        raise
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]

"""Batch runs of the walk-through: many parameter sets (one per run, e.g. one per CSV) run
concurrently over one workspace's local stack, each run its own notebooks, state and names.

A batch file is a YAML list of mappings, each one run's notebook parameters (what ``-p``, ``-y``
and ``-f`` give a single ``nitronb walkthrough``). Relative paths in it are read from the batch
file's folder. A run keeps its state in ``<workspace>/walkthroughs/<run>``
(:func:`nitronb.workspace.walkthrough_dir`) and gets names of its own on the stack (S3 folder,
datasets, app configuration, workflow) unless its mapping names them; the app's image and build
are shared, built by one run at a time. Imports :mod:`nitronb.notebook.runner`, the steps and
the layers below.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from nitronb.errors import BatchError, NitronbError

#: parameters whose values must differ between the runs of a batch (they name things on the
#: shared stack); each run gets its own by default (:func:`run_defaults`)
PER_RUN = ("s3_dir", "input_name", "output_name", "app_config_name", "workflow_name")
#: notebooks that change what every run shares (the app, its image and build): one run at a time
SHARED_STEPS = ("05_",)


@dataclass
class BatchRun:
    """One run of a batch and how it went. ``status`` is ``waiting``, ``running``, ``ok``,
    ``failed`` or ``cancelled``; ``seconds`` its wall time; ``result`` a one-line summary of
    the decrypted result; ``error`` the one-line error of a failed run."""

    index: int
    name: str
    parameters: dict[str, Any] = field(repr=False)
    out: Path
    status: str = "waiting"
    notebook: str = ""
    done: int = 0
    seconds: float = 0.0
    result: str = ""
    error: str = ""

    @property
    def input(self) -> str:
        """The input CSV's file name (``conditions.csv`` for the shipped sample)."""
        return Path(self.parameters.get("input_csv") or "conditions.csv").name


def read_batch(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The runs of a batch file: a non-empty YAML list of mappings with text keys.
    Raises :class:`BatchError` for a file that cannot be read or has another shape."""
    import yaml

    from nitronb.notebook.runner import import_papermill

    import_papermill()
    from papermill.iorw import NoDatesSafeLoader

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read the batch file {path}: "
                         f"{getattr(exc, 'strerror', None) or exc}.") from None
    try:
        loaded = yaml.load(text, Loader=NoDatesSafeLoader)
    except yaml.YAMLError as exc:
        raise BatchError(f"the batch file {path} is not YAML: {' '.join(str(exc).split())}.",
                         hint=_SHAPE) from None
    if not isinstance(loaded, list) or not loaded:
        raise BatchError(f"the batch file {path} must be a YAML list with one mapping of "
                         "parameters per run.", hint=_SHAPE)
    for index, entry in enumerate(loaded, 1):
        if entry is None:
            loaded[index - 1] = entry = {}
        if not isinstance(entry, dict) or not all(isinstance(k, str) for k in entry):
            raise BatchError(f"run {index} of {path} is not a mapping of parameter names to "
                             "values.", hint=_SHAPE)
    return loaded


_SHAPE = "Write one `- name: value` block per run, e.g. `- {input_csv: a.csv}`."


def run_name(index: int) -> str:
    """The name of a batch's run ``index`` (1-based): ``run-01``, ``run-02``, …"""
    return f"run-{index:02d}"


def run_defaults(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The names a run gets on the shared stack unless ``parameters`` give them: its own S3
    folder, datasets, app configuration and workflow, each ending in the run's name."""
    from nitronb.datasets import SAMPLE_DATASET, name_from_file

    csv = parameters.get("input_csv")
    input_name = name_from_file(csv) if csv else SAMPLE_DATASET["name"]
    return {"s3_dir": f"s3://nitronb/batch/{name}/", "input_name": f"{input_name}-{name}",
            "output_name": f"describe-result-{name}",
            "app_config_name": f"describe-app-config-{name}",
            "workflow_name": f"describe-conditions-{name}"}


def plan_batch(path: str | os.PathLike[str], out_dir: str | os.PathLike[str], *,
               workspace: str | os.PathLike[str] | None = None,
               notebooks: list[Path] | None = None, common: dict[str, Any] | None = None,
               texts: dict[str, str] | None = None) -> list[BatchRun]:
    """The runs of the batch file at ``path``, each checked as ``nitronb walkthrough`` checks
    its parameters (names, types, choices, the input CSV readable …) before anything runs,
    with its output folder ``out_dir/<run>`` and its names on the stack (:func:`run_defaults`).
    ``common`` are parameters for every run (relative paths read from the current folder;
    ``texts`` their ``-p`` values as typed); a run's own mapping wins over them.

    Raises :class:`BatchError` naming the run (1-based, as listed in the file) and the
    parameter: a check that failed, a ``workspace`` other than the batch's, or a name on the
    stack (``PER_RUN``) that two runs share."""
    from nitronb.notebook import runner as nbs
    from nitronb.workspace import workspace_dir

    path = Path(path)
    entries = read_batch(path)
    chosen = list(notebooks or nbs.walkthrough_notebooks())
    declared_by = {nb: nbs.declared_parameters(nb) for nb in chosen}
    ws = str(workspace_dir(workspace, create=False))  # created when the batch starts
    declared = {name for names in declared_by.values() for name in names}
    runs, seen = [], {}
    for index, entry in enumerate(entries, 1):
        name = run_name(index)
        own = nbs.absolute_paths(entry, cwd=path.resolve().parent)
        given = {**nbs.absolute_paths(common or {}), **own}
        if given.get("workspace") not in (None, "") and str(
                workspace_dir(given["workspace"], create=False)) != ws:
            raise BatchError(f"run {index} of {path}: parameter workspace names "
                             f"{given['workspace']}; a batch runs in one workspace ({ws}).",
                             hint="Leave workspace out of the runs; give --workspace instead.")
        given = {**run_defaults(name, given), **given, "workspace": ws}
        try:
            prepared = nbs.prepare_parameters(given, declared_by, texts={
                k: v for k, v in (texts or {}).items() if k not in own})
        except NitronbError as exc:
            hint = (exc.hint or "").replace(
                "the folder the command or kernel runs in",
                f"the batch file's folder, {path.resolve().parent}, for a path in the file")
            raise BatchError(f"run {index} of {path}: {exc.message}", hint=hint) from None
        for key in PER_RUN:
            value = prepared.get(key)
            if key in declared and (key, value) in seen:
                raise BatchError(f"runs {seen[key, value]} and {index} of {path} both give "
                                 f"parameter {key} the value {value!r}; each run needs its own.",
                                 hint=f"Leave {key} out (each run then gets one of its own), "
                                      "or give every run another.")
            seen[key, value] = index
        runs.append(BatchRun(index, name, prepared, Path(out_dir) / name))
    return runs


def run_batch(runs: list[BatchRun], *, workspace: str | os.PathLike[str] | None = None,
              jobs: int = 4, notebooks: list[Path] | None = None,
              on_change: Callable[[BatchRun], None] | None = None,
              cancel: threading.Event | None = None) -> list[BatchRun]:
    """Run ``runs`` (from :func:`plan_batch`), at most ``jobs`` at a time, each in its own
    fresh kernels (:func:`nitronb.notebook.runner.run_notebooks`), over the local stack of
    ``workspace`` (started first if it is down). A failing run does not stop the others; its
    ``error`` says why. ``on_change(run)`` is called (from the runs' threads) whenever a run
    starts, finishes a notebook or ends; ``cancel``, once set, keeps runs not yet started from
    starting and stops the others before their next notebook. Returns ``runs``, updated."""
    from nitronb.local import stack as local
    from nitronb.notebook import runner as nbs

    chosen = list(notebooks or nbs.walkthrough_notebooks())
    with _one_batch_at_a_time(workspace):
        nbs.ensure_kernelspec()
        local.ensure_up(workspace)
        return _run_all(runs, workspace, jobs, chosen, on_change, cancel)


@contextlib.contextmanager
def _one_batch_at_a_time(workspace: str | os.PathLike[str] | None) -> Iterator[None]:
    """Hold the workspace's batch lock (runs of two batches would share names and folders);
    :class:`BatchError` if another batch holds it."""
    import fcntl

    from nitronb.workspace import walkthrough_dir, workspace_dir

    folder = walkthrough_dir(workspace_dir(workspace), "lock").parent
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / ".batch.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BatchError(f"another batch is running over the workspace "
                             f"{workspace_dir(workspace)}.",
                             hint="Wait for it to end, or give this batch another --workspace."
                             ) from None
        yield
    finally:
        os.close(fd)


def _run_all(runs: list[BatchRun], workspace: str | os.PathLike[str] | None, jobs: int,
             chosen: list[Path], on_change: Callable[[BatchRun], None] | None,
             cancel: threading.Event | None) -> list[BatchRun]:
    from nitronb.notebook import steps
    from nitronb.notebook import runner as nbs

    shared = threading.Lock()
    cancel = cancel or threading.Event()
    changed = on_change or (lambda run: None)

    def one(run: BatchRun) -> None:
        if cancel.is_set():
            run.status = "cancelled"
            changed(run)
            return
        holding = threading.Event()
        started = time.perf_counter()

        def on_start(notebook: Path) -> None:
            if cancel.is_set():
                raise _Cancelled()
            run.notebook = notebook.stem
            changed(run)
            if notebook.name.startswith(SHARED_STEPS):
                shared.acquire()
                holding.set()

        def on_done(_done) -> None:
            run.done += 1
            if holding.is_set():
                holding.clear()
                shared.release()
            changed(run)

        run.status = "running"
        changed(run)
        try:
            nbs.run_notebooks(run.out, run.parameters, chosen, on_start, on_done,
                              env={"NITRONB_WALKTHROUGH": run.name}, ahead=1)
            result = steps.decrypt_output(steps.Walkthrough(workspace, run=run.name))
            run.result = result_line(result)
            run.status = "ok" if result.ok else "failed"
            run.error = "" if result.ok else result.error_line()
        except _Cancelled:
            run.status, run.error = "cancelled", "the batch was interrupted"
        except NitronbError as exc:
            run.status, run.error = "failed", " ".join(exc.message.split())
        except Exception as exc:  # noqa: BLE001 - one run's failure must not stop the others
            # a kernel killed because the batch was interrupted ends its run this way too
            run.status = "cancelled" if cancel.is_set() else "failed"
            run.error = ("the batch was interrupted" if cancel.is_set()
                         else f"{type(exc).__name__}: {' '.join(str(exc).split())}")
        finally:
            if holding.is_set():
                shared.release()
            run.seconds = time.perf_counter() - started
            changed(run)

    with ThreadPoolExecutor(max_workers=max(1, jobs), thread_name_prefix="nitronb-run") as pool:
        for future in [pool.submit(one, run) for run in runs]:
            future.result()
    return runs


class _Cancelled(Exception):
    """The batch was interrupted before this run's next notebook."""


def result_line(result) -> str:
    """One line for a decrypted result: the first described column's top value, its count and
    the rows counted (``top Viral sinusitis (disorder) (1248 of 8376, 129 unique)``), else the
    app's first line of output, else its error line."""
    from nitronb.results import describe_summary

    if not result.ok:
        return result.error_line()
    for fields in describe_summary(result.text).values():
        if "top" in fields:
            return (f"top {fields['top']} ({fields.get('freq', '?')} of "
                    f"{fields.get('count', '?')}, {fields.get('unique', '?')} unique)")
    first = next((line.strip() for line in result.text.splitlines() if line.strip()), "")
    return first or "the app printed nothing"

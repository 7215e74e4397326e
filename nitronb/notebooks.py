"""Running the walk-through's notebooks with papermill, in order, into a run folder."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from nitronb.errors import NitronbError, NotebookError


def notebooks_dir() -> Path:
    """The ``notebooks/`` folder of the project (beside the package)."""
    here = Path(__file__).resolve().parent.parent / "notebooks"
    if not here.is_dir():
        raise NitronbError(f"the notebooks folder {here} is missing; run from a checkout of "
                           "nitronb (pip install -e .).")
    return here


def walkthrough_notebooks(folder: Path | None = None) -> list[Path]:
    """The numbered notebooks ``01_…`` to ``09_…``, in order (the index ``00`` is not run)."""
    folder = folder or notebooks_dir()
    found = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))
    if not found:
        raise NitronbError(f"no walk-through notebook in {folder}.")
    return found


def declared_parameters(notebook: Path) -> dict[str, Any]:
    """The names (and literal defaults) of a notebook's ``parameters`` cell."""
    import papermill

    return {name: spec.get("default") for name, spec in
            papermill.inspect_notebook(str(notebook)).items()}


def coerce(value: str) -> Any:
    """A ``-p NAME VALUE`` value: a number, a boolean or null if it reads as one, else text."""
    import json

    try:
        parsed = json.loads(value)
    except ValueError:
        return value
    return parsed if isinstance(parsed, (int, float, bool)) or parsed is None else value


@dataclass
class NotebookRun:
    notebook: str
    output: Path
    seconds: float


def run_notebooks(out_dir: str | os.PathLike[str], parameters: Mapping[str, Any] | None = None,
                  notebooks: list[Path] | None = None,
                  on_start: Callable[[Path], None] | None = None,
                  on_done: Callable[[NotebookRun], None] | None = None) -> list[NotebookRun]:
    """Execute ``notebooks`` (default: the walk-through) in order with papermill.

    Each executed notebook is kept in ``out_dir``; a notebook receives only the parameters its
    ``parameters`` cell declares. The first failing cell raises :class:`NotebookError` naming the
    notebook and the cell. What the kernels write to stderr goes to ``out_dir/kernels.log``.
    """
    import time

    import papermill
    from papermill.exceptions import PapermillExecutionError

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parameters = dict(parameters or {})
    notebooks = list(notebooks or walkthrough_notebooks())
    declared_by = {nb: declared_parameters(nb) for nb in notebooks}
    unknown = set(parameters) - {name for declared in declared_by.values() for name in declared}
    if unknown:
        raise NotebookError(f"no notebook declares the parameter(s) {', '.join(sorted(unknown))}.",
                            hint="Each notebook's first cell lists the parameters it takes.")
    runs = []
    for notebook in notebooks:
        if on_start:
            on_start(notebook)
        declared = declared_by[notebook]
        given = {k: v for k, v in parameters.items() if k in declared}
        target = out / notebook.name
        started = time.perf_counter()
        try:
            with _stderr_to(out / "kernels.log"):
                papermill.execute_notebook(str(notebook), str(target), parameters=given,
                                           kernel_name="python3", progress_bar=False,
                                           cwd=str(notebook.parent))
        except PapermillExecutionError as exc:
            raise NotebookError(
                f"{notebook.name} failed in cell {exc.exec_count or exc.cell_index}: "
                f"{exc.ename}: {exc.evalue}",
                hint=f"The executed notebook with the traceback is {target}.") from None
        runs.append(NotebookRun(notebook.name, target, time.perf_counter() - started))
        if on_done:
            on_done(runs[-1])
    return runs


@contextlib.contextmanager
def _stderr_to(path: Path) -> Iterator[None]:
    """Send file descriptor 2 (which kernels inherit) to ``path`` for the duration."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as log:
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)

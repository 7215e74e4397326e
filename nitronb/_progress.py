"""Progress bars for long work: on a terminal, a text bar on stderr; in a Jupyter kernel, a
widget bar in the cell's output; silent otherwise (pipes, CI). Either appears only once the work
has lasted :data:`DELAY` seconds, so short transfers leave no trace in outputs."""

from __future__ import annotations

import sys
from typing import Protocol


class Progress(Protocol):
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...


class _Silent:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


#: seconds of work before a bar appears
DELAY = 2.0


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (a notebook, JupyterLab, papermill)."""
    ipython = sys.modules.get("IPython")
    if ipython is None:
        return False
    shell = ipython.get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def progress_bar(total: int | None, desc: str, *, enabled: bool | None = None):
    """A byte-counting progress bar (``total`` in bytes, ``None`` if unknown) for work that
    lasts over :data:`DELAY` seconds: a widget in a Jupyter kernel, else a text bar on stderr
    when it is a terminal. ``enabled`` ``False`` silences it; ``True`` shows a text bar on
    stderr at once, terminal or not."""
    options = dict(total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                   leave=False, dynamic_ncols=True)
    if enabled is None:
        if in_kernel():
            from tqdm.notebook import tqdm as widget_bar

            return widget_bar(delay=DELAY, **options)
        if not sys.stderr.isatty():
            return _Silent()
        from tqdm import tqdm

        return tqdm(file=sys.stderr, delay=DELAY, **options)
    if not enabled:
        return _Silent()
    from tqdm import tqdm  # only when a person is watching

    return tqdm(file=sys.stderr, **options)

"""Interactive forms for people stepping through the notebooks: a dataset form, the approvals of
every party, and a live view of an enclave run.

Each class builds its ipywidgets on construction (ipywidgets is imported then, never when nitronb
is imported), keeps them in ``.widget``, and is displayed like a widget. Every button has a plain
method behind it, so the same steps can be driven from Python. Scripts and the command line call
the library functions directly and need none of this. Markdown is rendered by
:mod:`nitronb.notebook.markdown` (sanitized), a run's state is followed by :mod:`nitronb.notebook.run_state`.
One module per widget (``dataset_form``, ``approvals``, ``run_monitor``); the names below are
the public ones.
"""

from __future__ import annotations

from nitronb.datasets import parse_labels
from nitronb.errors import WidgetsUnavailableError
from nitronb.notebook.run_state import RUN_STEPS, RunState
from nitronb.notebook.widgets.approvals import TASK_TYPES, ApprovalsPanel, PendingItem, SupersededRequest
from nitronb.notebook.widgets.dataset_form import DatasetForm
from nitronb.notebook.widgets.run_monitor import RunMonitor

__all__ = ["DatasetForm", "ApprovalsPanel", "PendingItem", "SupersededRequest", "TASK_TYPES",
           "RunMonitor", "RunState", "RUN_STEPS", "parse_labels", "WidgetsUnavailableError"]

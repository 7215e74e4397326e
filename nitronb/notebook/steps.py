"""The walk-through's steps, one verb per notebook, as the notebooks call them
(``from nitronb import steps``), with the displays shown beside them.

The steps hand their products on through the workspace (``<workspace>/walkthrough/``, see
:mod:`nitronb.notebook.walkthrough`), so that each notebook runs alone after its predecessors.
They live by party: :mod:`~nitronb.notebook.data_steps` (data and output owners: 01–04, 09),
:mod:`~nitronb.notebook.app_steps` (application owner: 05, 06),
:mod:`~nitronb.notebook.workflow_steps` (every party: 07, 08); the displays in
:mod:`~nitronb.notebook.displays`. Every verb returns a small record whose display shows no secret.
"""

from __future__ import annotations

import os

from nitronb.errors import NitronbError, StepOrderError
from nitronb.notebook.walkthrough import Record, Walkthrough, as_walkthrough, start_local_stack
from nitronb.notebook.data_steps import (create_datasets, decrypt_output, encrypt_input,
                                         generate_keys, upload_and_presign)
from nitronb.notebook.app_steps import build_enclave_image, create_app_configuration
from nitronb.notebook.workflow_steps import (approval_status, approve_workflow,
                                             approved_config_id, create_workflow, run_workflow,
                                             runtime_configuration)
# what the notebooks display beside the steps
from nitronb.notebook.displays import (Picture, approvals_panel, dataset_form, result_chart,
                                       result_table, run_summary, run_workflow_live,
                                       workflow_picture)


def through_approval(workspace=None, *, backend: str = "process",
                     input_csv: str | os.PathLike[str] | None = None, encoding: str = "utf-8",
                     required_columns: list[str] | tuple[str, ...] | None = None,
                     app_dir: str | os.PathLike[str] | None = None) -> Walkthrough:
    """Steps 01 to 07 with their defaults, every owner approving: the workspace is then ready
    for :func:`run_workflow` (for batch runs, tests and benchmarks). ``input_csv``,
    ``encoding`` and ``required_columns`` go to :func:`encrypt_input`, ``app_dir`` to
    :func:`build_enclave_image`."""
    wt = as_walkthrough(workspace)
    generate_keys(wt)
    encrypt_input(wt, input_csv, encoding=encoding, required_columns=required_columns)
    for step in (upload_and_presign, create_datasets):
        step(wt)
    build_enclave_image(wt, backend=backend, app_dir=app_dir)
    create_app_configuration(wt)
    create_workflow(wt)
    approved = approve_workflow(wt)
    if approved["request"]["status"] != "APPROVED":
        raise NitronbError(f"the workflow ended {approved['request']['status']}, not APPROVED.")
    return wt


__all__ = [
    "Walkthrough", "Record", "StepOrderError", "start_local_stack", "generate_keys",
    "encrypt_input", "upload_and_presign", "create_datasets", "build_enclave_image",
    "create_app_configuration", "create_workflow", "approve_workflow", "through_approval",
    "runtime_configuration", "approval_status", "approved_config_id", "run_workflow_live",
    "run_workflow", "decrypt_output", "Picture", "workflow_picture", "run_summary",
    "result_table", "result_chart", "dataset_form", "approvals_panel",
]

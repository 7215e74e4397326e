"""A nitronb error in a notebook shows as its one-line message and hint, not as a traceback
through nitronb's files: in the kernel's error output (what JupyterLab shows and the stored
notebook keeps) and in papermill's error."""

from __future__ import annotations

import re

import nbformat
import pytest

from nitronb.errors import NitronbError, RunError

CELL = """from nitronb import steps

steps.encrypt_input(workspace)"""
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def notebook(workspace) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(f"workspace = {str(workspace)!r}"),
                nbformat.v4.new_code_cell(CELL)]
    return nb


def assert_short(traceback: list[str], workspace) -> None:
    text = ANSI.sub("", "\n".join(traceback))
    first, hint = text.splitlines()
    assert first.startswith("StepOrderError: this step needs input key from 01_generate_keys, "
                            "which has not run in the workspace $WORKSPACE")
    assert hint == "hint: Run 01_generate_keys first (or the whole walk-through)."
    assert str(workspace) not in text and ".py" not in text and "File " not in text


def test_the_kernel_stores_the_message_and_hint_only(tmp_path):
    from nbclient import NotebookClient

    nb = notebook(tmp_path)
    client = NotebookClient(nb, kernel_name="python3", timeout=120, allow_errors=True)
    client.execute()
    [error] = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert error.ename == "StepOrderError"
    assert error.evalue.startswith("this step needs input key from 01_generate_keys")
    assert error.evalue.endswith("Run 01_generate_keys first (or the whole walk-through).")
    assert_short(error.traceback, tmp_path)


def test_papermill_reports_the_same_short_lines(tmp_path):
    import papermill
    from papermill.exceptions import PapermillExecutionError

    source, target = tmp_path / "in.ipynb", tmp_path / "out.ipynb"
    nbformat.write(notebook(tmp_path / "ws"), source)
    with pytest.raises(PapermillExecutionError) as info:
        papermill.execute_notebook(str(source), str(target), kernel_name="python3",
                                   progress_bar=False, log_output=False)
    assert info.value.ename == "StepOrderError"
    assert_short(info.value.traceback, tmp_path / "ws")
    stored = nbformat.read(target, as_version=4)
    [error] = [o for c in stored.cells if c.cell_type == "code" for o in c.get("outputs", [])
               if o.output_type == "error"]
    assert_short(error.traceback, tmp_path / "ws")


def test_render_traceback_lines():
    lines = RunError("the enclave failed.", hint="See its log.")._render_traceback_()
    assert [ANSI.sub("", line) for line in lines] == ["RunError: the enclave failed.",
                                                      "hint: See its log."]
    assert [ANSI.sub("", line) for line in NitronbError("plain.")._render_traceback_()] == \
        ["NitronbError: plain."]

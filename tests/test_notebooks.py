"""The walk-through as batch users run it: papermill on each notebook, and `nitronb walkthrough`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nitronb.errors import NotebookError
from nitronb.notebook.runner import (KERNEL_NAME, declared_parameters, run_notebooks,
                                     walkthrough_notebooks)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def test_every_notebook_has_a_parameters_cell_with_literal_defaults():
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        cells = json.loads(notebook.read_text())["cells"]
        first_code = next(c for c in cells if c["cell_type"] == "code")
        assert "parameters" in first_code["metadata"].get("tags", []), notebook.name
        assert "workspace" in declared_parameters(notebook), notebook.name


def test_walkthrough_order():
    names = [p.stem for p in walkthrough_notebooks()]
    assert names[0] == "01_generate_keys" and names[-1] == "09_decrypt_output"
    assert len(names) == 9


def test_every_notebook_runs_on_the_nitronb_kernel():
    for notebook in sorted(NOTEBOOKS.glob("*.ipynb")):
        spec = json.loads(notebook.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
        assert spec == {"display_name": "Python 3 (nitronb)", "language": "python",
                        "name": KERNEL_NAME}, notebook.name


def test_a_wrong_type_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(NotebookError, match="parameter top of 09_decrypt_output takes a whole "
                                            "number, not 'ten'"):
        run_notebooks(tmp_path / "run", {"top": "ten"})
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    from nitronb.local import stack as local

    ws = tmp_path_factory.mktemp("nb-workspace")
    yield ws
    local.down(ws)


def test_papermill_cli_runs_one_step_after_its_predecessor(workspace, tmp_path):
    """`papermill 02_encrypt_input.ipynb out.ipynb -p …` works on its own after 01."""
    papermill = [sys.executable, "-m", "papermill", "--no-progress-bar", "--log-level", "ERROR"]
    first = subprocess.run([*papermill, NOTEBOOKS / "01_generate_keys.ipynb", tmp_path / "01.ipynb",
                            "-p", "workspace", str(workspace)], capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    (tmp_path / "mine.csv").write_text("START,DESCRIPTION\n2020-01-01,Headache\n")
    second = subprocess.run([*papermill, NOTEBOOKS / "02_encrypt_input.ipynb", tmp_path / "02.ipynb",
                             "-p", "workspace", str(workspace), "-p", "input_csv",
                             str(tmp_path / "mine.csv")], capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    out = json.loads((tmp_path / "02.ipynb").read_text())
    text = json.dumps([c.get("outputs") for c in out["cells"]])
    size = (tmp_path / "mine.csv").stat().st_size
    assert f"{size} bytes" in text and "mine.csv" in text
    assert (workspace / "walkthrough" / "conditions.csv.enc").stat().st_size == size + 28


def test_a_step_before_its_predecessor_says_which_to_run(tmp_path):
    with pytest.raises(NotebookError) as info:
        run_notebooks(tmp_path / "run", {"workspace": str(tmp_path / "empty")},
                      notebooks=[NOTEBOOKS / "02_encrypt_input.ipynb"])
    message = str(info.value)
    assert "02_encrypt_input.ipynb failed in cell" in message
    assert "01_generate_keys" in message
    assert (tmp_path / "run" / "02_encrypt_input.ipynb").exists()


def test_unknown_parameter_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(NotebookError, match="no notebook declares the parameter.*colour"):
        run_notebooks(tmp_path / "run", {"colour": "red"})
    assert not list((tmp_path / "run").glob("*.ipynb"))


def test_walkthrough_command_fails_with_the_notebook_and_cell_named(tmp_path):
    (tmp_path / "codes.csv").write_text("START,CODE\n2020-01-01,1\n", encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "nitronb", "walkthrough", "--out",
                           str(tmp_path / "run"), "--workspace", str(tmp_path / "ws"),
                           "-p", "input_csv", str(tmp_path / "codes.csv")],
                          capture_output=True, text=True, timeout=300)
    try:
        assert done.returncode == 1
        assert "02_encrypt_input" in done.stderr and "FAILED" in done.stderr
        assert "failed in cell" in done.stderr and "has no column DESCRIPTION" in done.stderr
        assert "Traceback" not in done.stderr
    finally:
        from nitronb.local import stack as local

        local.down(tmp_path / "ws")

"""`nitronb walkthrough --batch`: runs with different CSVs at once over one local stack, each
with its own folder, state and result; a failing run does not stop the others; the batch file
is checked run by run before anything starts."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nitronb.notebook.batch import plan_batch
from nitronb.errors import BatchError

from test_kernels import _kernels_of


def _batch(*args: str, cwd: Path, workspace: Path) -> subprocess.Popen:
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace)}
    return subprocess.Popen([sys.executable, "-m", "nitronb", "walkthrough", *args], cwd=cwd,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _slice(sample: list[str], rows: slice, target: Path) -> int:
    """A CSV of the sample's header and ``rows`` of its rows; returns how many rows."""
    body = sample[1:][rows]
    target.write_text("".join([sample[0], *body]), encoding="utf-8")
    return len(body)


def test_a_batch_runs_each_csv_on_its_own_and_goes_on_past_a_failure(local_stack, tmp_path):
    from nitronb import sample_path

    sample = sample_path().read_text(encoding="utf-8").splitlines(keepends=True)
    data = tmp_path / "data"
    data.mkdir()
    first = _slice(sample, slice(0, 3000), data / "early.csv")
    second = _slice(sample, slice(3000, 4000), data / "late.csv")
    (data / "codes.csv").write_text("START,CODE\n2020-01-01,1\n", encoding="utf-8")
    (tmp_path / "batch.yaml").write_text(
        "- input_csv: data/early.csv\n"
        "- input_csv: data/codes.csv\n"
        "- {input_csv: data/late.csv, top: 3}\n", encoding="utf-8")
    elsewhere = tmp_path / "elsewhere"  # relative paths are read from the batch file's folder
    elsewhere.mkdir()
    proc = _batch("--batch", "../batch.yaml", "--out", "out", "--jobs", "3", cwd=elsewhere,
                  workspace=local_stack.workspace)
    stdout, stderr = proc.communicate(timeout=900)
    assert proc.returncode == 1, stderr[-3000:]
    assert _kernels_of(proc.pid) == []
    out = elsewhere / "out"
    notebooks = sorted(p.name for p in (out / "run-01").glob("*.ipynb"))
    assert len(notebooks) == 9 and notebooks[-1] == "09_decrypt_output.ipynb"
    assert (out / "run-01" / "kernels.log").exists()
    assert len(list((out / "run-03").glob("*.ipynb"))) == 9
    # the failing run keeps what it executed, up to the notebook that failed
    assert sorted(p.name for p in (out / "run-02").glob("*.ipynb")) == [
        "01_generate_keys.ipynb", "02_encrypt_input.ipynb"]
    # one row per run; each result counts its own CSV's rows (nothing shared between runs)
    rows = {line.split()[0]: line for line in stdout.splitlines()}
    assert re.match(r"run-01\s+ok\s+\d+\.\d s\s+early\.csv\s+top .+ \(\d+ of "
                    rf"{first}, \d+ unique\)$", rows["run-01"])
    assert re.match(r"run-02\s+failed\s+\d+\.\d s\s+codes\.csv\s+02_encrypt_input\.ipynb failed "
                    r"in cell \d+: InputDataError: codes\.csv has no column DESCRIPTION",
                    rows["run-02"])
    assert re.search(rf"\(\d+ of {second}, \d+ unique\)$", rows["run-03"])
    assert "run-03  ok" in rows["run-03"]
    assert "1 of 3 runs failed (run-02)" in stderr
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert [(r["name"], r["status"]) for r in summary] == [
        ("run-01", "ok"), ("run-02", "failed"), ("run-03", "ok")]
    # each run's state in its own folder of the one workspace
    state = json.loads((local_stack.workspace / "walkthroughs" / "run-03" / "state.json")
                       .read_text(encoding="utf-8"))
    assert state["input_dataset"] == "late-run-03"
    assert state["output_uri"] == "s3://nitronb/batch/run-03/describe-result.json.enc"
    executed = (out / "run-03" / "09_decrypt_output.ipynb").read_text(encoding="utf-8")
    assert "top = 3" in executed  # the run's own parameter


def _plan(tmp_path: Path, text: str):
    (tmp_path / "batch.yaml").write_text(text, encoding="utf-8")
    return plan_batch(tmp_path / "batch.yaml", tmp_path / "out", workspace=tmp_path / "ws")


@pytest.mark.parametrize("text, message", [
    ("input_csv: a.csv\n", r"must be a YAML list with one mapping of parameters per run"),
    ("- {}\n- [a, b]\n", r"run 2 of .*batch\.yaml is not a mapping"),
    ("- {}\n- inptu_csv: a.csv\n",
     r"run 2 of .*batch\.yaml: no notebook declares the parameter\(s\) inptu_csv; did you "
     r"mean input_csv\?"),
    ("- expiry: soon\n",
     r"run 1 of .*batch\.yaml: parameter expiry of 03_upload_and_presign takes a whole number, "
     r"not 'soon'"),
    ("- {}\n- {}\n- input_csv: missing.csv\n", r"run 3 of .*batch\.yaml: .*missing\.csv"),
    ("- output_name: same\n- output_name: same\n",
     r"runs 1 and 2 of .*batch\.yaml both give parameter output_name the value 'same'"),
    ("- [unclosed\n", r"is not YAML"),
])
def test_a_batch_file_is_refused_naming_the_run_and_parameter(tmp_path, text, message):
    with pytest.raises(BatchError, match=message):
        _plan(tmp_path, text)
    assert not (tmp_path / "out").exists() and not (tmp_path / "ws").exists()


def test_relative_paths_are_read_from_the_batch_files_folder(tmp_path):
    (tmp_path / "a.csv").write_text("DESCRIPTION\nx\n", encoding="utf-8")
    runs = _plan(tmp_path, "- input_csv: a.csv\n- {}\n")
    assert runs[0].parameters["input_csv"] == str(tmp_path / "a.csv")
    assert [r.name for r in runs] == ["run-01", "run-02"]
    assert runs[0].parameters["input_name"] == "a-run-01"
    assert runs[1].parameters["input_name"] == "synthea-conditions-run-02"
    assert {r.parameters["s3_dir"] for r in runs} == {"s3://nitronb/batch/run-01/",
                                                      "s3://nitronb/batch/run-02/"}


def test_the_command_refuses_a_bad_batch_file_before_anything_starts(tmp_path):
    (tmp_path / "batch.yaml").write_text("- {}\n- top: 0\n", encoding="utf-8")
    proc = _batch("--batch", "batch.yaml", "--out", "out", cwd=tmp_path,
                  workspace=tmp_path / "ws")
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    assert stderr.startswith("nitronb: error: run 2 of batch.yaml: parameter top of "
                             "09_decrypt_output takes a number of at least 1, not 0.")
    assert not (tmp_path / "out").exists() and not (tmp_path / "ws" / "local").exists()


def test_a_second_batch_over_one_workspace_is_refused_while_the_first_runs(tmp_path):
    import fcntl

    from nitronb.notebook.batch import run_batch

    workspace = tmp_path / "ws"
    (workspace / "walkthroughs").mkdir(parents=True)
    with open(workspace / "walkthroughs" / ".batch.lock", "w", encoding="utf-8") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # the first batch
        with pytest.raises(BatchError, match="another batch is running over the workspace"):
            run_batch([], workspace=workspace)
    assert not (workspace / "local").exists()  # refused before the stack was touched


def test_a_missing_csv_in_the_batch_file_points_at_the_files_folder(tmp_path):
    with pytest.raises(BatchError) as caught:
        _plan(tmp_path, "- input_csv: nowhere.csv\n")
    assert "run 1 of" in caught.value.message and "does not exist" in caught.value.message
    assert f"the batch file's folder, {tmp_path}" in caught.value.hint
    assert "kernel runs in" not in caught.value.hint

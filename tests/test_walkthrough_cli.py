"""`nitronb walkthrough` with the data owner's own CSV, read from the caller's folder: the result
is labelled with it, and when the app fails its own error reaches the output owner."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

USECOLS = ("the enclave's app exited with code 1: ValueError: Usecols do not match columns, "
           "columns expected but not found: ['DESCRIPTION']")


def _walkthrough(*args: str, cwd: Path, workspace: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace)}
    return subprocess.run([sys.executable, "-m", "nitronb", "walkthrough", "--out", "run", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def _outputs(notebook: Path) -> str:
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    return json.dumps([c.get("outputs") for c in cells], ensure_ascii=False)


def test_an_app_that_fails_shows_its_own_error_after_the_run(tmp_path):
    """The pre-check is turned off (required_columns=[]), so the app meets a CSV without the
    DESCRIPTION column: 08 completes with the app's exit code, 09 and the command show pandas'
    error from the result the app uploaded, and the command exits 1."""
    from nitronb.local import stack as local

    workspace = tmp_path / "ws"
    (tmp_path / "codes.csv").write_text("START,CODE\n2020-01-01,1\n", encoding="utf-8")
    try:
        done = _walkthrough("-p", "input_csv", "codes.csv", "-p", "required_columns", "[]",
                            cwd=tmp_path, workspace=workspace)
    finally:
        local.down(workspace)
    assert done.returncode == 1
    assert "08_run_workflow              … ok" in done.stderr
    assert "09_decrypt_output            … ok" in done.stderr
    assert "the app's stderr (last lines):" in done.stderr
    assert done.stderr.rstrip().endswith(f"nitronb: error: {USECOLS}")
    # what the app printed before failing, its input labelled with the user's dataset
    assert re.match(r"input/[a-z][a-z0-9]{8} \(dataset codes\)\n", done.stdout)
    run = tmp_path / "run"
    assert re.search(r"app exit code\s+1\b", _outputs(run / "08_run_workflow.ipynb"))
    shown = _outputs(run / "09_decrypt_output.ipynb")
    assert USECOLS in shown and "its stderr (last lines)" in shown
    assert "describe() of DESCRIPTION in codes: the app failed" in shown
    assert '"ename"' not in shown  # no cell failed


def test_the_result_is_labelled_with_the_data_owners_csv(tmp_path):
    from nitronb.local import stack as local
    from nitronb.results import describe_summary, value_counts

    workspace = tmp_path / "ws"
    (tmp_path / "visits.csv").write_bytes(
        "START,DESCRIPTION\n2020,Café allergy\n2021,\"Sprain\nof ankle\"\n2022,Café allergy\n"
        .encode("cp1252"))
    try:
        done = _walkthrough("-p", "input_csv", "visits.csv", "-p", "encoding", "cp1252",
                            cwd=tmp_path, workspace=workspace)
    finally:
        local.down(workspace)
    assert done.returncode == 0, done.stderr
    (label, summary), = describe_summary(done.stdout).items()
    assert re.fullmatch(r"input/[a-z][a-z0-9]{8} \(dataset visits\)", label)
    assert summary == {"count": 3, "unique": 2, "top": "Café allergy", "freq": 2}
    # the multi-line value is listed on one line, and charted with the others
    assert "\n       1  Sprain\\nof ankle\n" in done.stdout
    assert value_counts(done.stdout) == {"Café allergy": 2, "Sprain\nof ankle": 1}
    run = tmp_path / "run"
    shown = _outputs(run / "09_decrypt_output.ipynb")
    assert "most frequent DESCRIPTION values in visits" in shown
    assert "describe() of DESCRIPTION in visits" in shown
    # the object in the store is named after the CSV
    uploaded = _outputs(run / "03_upload_and_presign.ipynb")
    assert "s3://nitronb/walkthrough/visits.csv.enc" in uploaded


def test_on_a_terminal_the_running_notebooks_seconds_count_up(tmp_path):
    """On a terminal the line of the running notebook shows its seconds while it runs (``08``
    lasts several), then ends as in a pipe: ``… ok (N s)``."""
    from nitronb.local import stack as local
    from test_progress import _on_a_terminal

    workspace = tmp_path / "ws"
    code = (f"import os, sys; os.environ['NITRONB_WORKSPACE'] = {str(workspace)!r}; "
            f"os.chdir({str(tmp_path)!r}); sys.argv = ['nitronb', 'walkthrough', '--out', "
            "'run']; from nitronb.cli import main; sys.exit(main())")
    try:
        shown = _on_a_terminal(code)
    finally:
        local.down(workspace)
    assert re.search(r"\r  08_run_workflow              … \d+ s\x1b\[K", shown), shown[-3000:]
    assert re.search(r"\r  08_run_workflow              …\x1b\[K ok \(\d+\.\d s\)", shown)
    assert "Viral sinusitis (disorder)" in shown

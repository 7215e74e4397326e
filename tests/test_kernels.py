"""The walk-through's kernels: each notebook in a fresh kernel of its own (the next one started
while the current notebook runs), and no kernel left behind after success, failure or SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import psutil
import pytest

from nitronb.errors import NotebookError
from nitronb.notebook.runner import run_notebooks


def _notebook(path: Path, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nb.metadata["kernelspec"] = {"name": "nitronb", "display_name": "nitronb",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def _kernels_of(pid: int) -> list[int]:
    """The Jupyter kernels still running that the process ``pid`` started."""
    found = []
    for proc in psutil.process_iter(["cmdline", "environ"]):
        try:
            cmdline = proc.info["cmdline"] or []
            environ = proc.info["environ"] or {}
        except (psutil.Error, OSError):
            continue
        if any("ipykernel_launcher" in part for part in cmdline) and \
                environ.get("JPY_PARENT_PID") == str(pid):
            found.append(proc.pid)
    return found


def test_each_notebook_runs_in_a_fresh_kernel_and_none_is_left(tmp_path):
    first = _notebook(tmp_path / "a.ipynb",
                      "import os\nleak = 1\nopen('pids.txt', 'a').write(f'{os.getpid()}\\n')")
    second = _notebook(tmp_path / "b.ipynb",
                       "import os\nopen('pids.txt', 'a').write(f'{os.getpid()}\\n')\n"
                       "names = sorted(n for n in globals() if not n.startswith('_'))\n"
                       "assert 'leak' not in names, names\n"
                       "assert not {'nitronb', 'steps', 'pandas'} & set(names), names\n"
                       "print(names)")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the kernels' working folder is the caller's
    try:
        runs = run_notebooks(tmp_path / "run", {}, [first, second])
    finally:
        os.chdir(cwd)
    assert [r.notebook for r in runs] == ["a.ipynb", "b.ipynb"]
    pids = [int(line) for line in (tmp_path / "pids.txt").read_text().split()]
    assert len(set(pids)) == 2  # two kernels
    assert not any(psutil.pid_exists(pid) for pid in pids)
    assert _kernels_of(os.getpid()) == []
    executed = json.loads((tmp_path / "run" / "b.ipynb").read_text(encoding="utf-8"))
    cell = executed["cells"][0]
    # the warm-up imports ran silently: the notebook's first cell is still number 1
    assert cell["execution_count"] == 1
    shown = "".join(cell["outputs"][0]["text"])
    assert "'os'" in shown and "leak" not in shown


def test_a_failing_notebook_stops_the_run_and_leaves_no_kernel(tmp_path):
    failing = _notebook(tmp_path / "a.ipynb", "raise ValueError('no good')")
    never = _notebook(tmp_path / "b.ipynb", "open('ran.txt', 'w').write('ran')")
    with pytest.raises(NotebookError, match=r"a.ipynb failed in cell 1: ValueError: no good"):
        run_notebooks(tmp_path / "run", {}, [failing, never])
    assert (tmp_path / "run" / "a.ipynb").exists()
    assert not (tmp_path / "run" / "b.ipynb").exists()
    assert not (tmp_path / "ran.txt").exists() and not Path("ran.txt").exists()
    assert _kernels_of(os.getpid()) == []


def test_sigterm_during_the_walkthrough_leaves_no_kernel(local_stack, tmp_path):
    """SIGTERM while a notebook runs (and the next one's kernel waits): the command ends
    with 143, keeps the notebooks executed so far, and no kernel outlives it."""
    env = {**os.environ, "NITRONB_WORKSPACE": str(local_stack.workspace)}
    log = tmp_path / "stderr.txt"
    with open(log, "w", encoding="utf-8") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "nitronb", "walkthrough", "--out", "run"],
                                cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 240
            while "02_encrypt_input" not in log.read_text(encoding="utf-8"):
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            assert len(_kernels_of(proc.pid)) >= 1
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 143, log.read_text(encoding="utf-8")
    assert "terminated by SIGTERM" in log.read_text(encoding="utf-8")
    assert (tmp_path / "run" / "01_generate_keys.ipynb").exists()
    assert _kernels_of(proc.pid) == []

"""The README's "From a terminal" sequence, run as written in an empty folder after the
walk-through's steps 01 to 07 (as the quick start leaves the workspace)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _terminal_sequence() -> str:
    section = README.read_text(encoding="utf-8").split("## From a terminal", 1)[1]
    return re.search(r"```sh\n(.*?)```", section, re.S).group(1)


def test_the_readme_terminal_sequence_runs_as_written(tmp_path):
    from nitronb.local import stack as local
    from nitronb.notebook import steps
    from nitronb.results import describe_summary

    workspace = tmp_path / "ws"
    folder = tmp_path / "empty"
    folder.mkdir()
    env = {**os.environ, "NITRONB_WORKSPACE": str(workspace),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    try:
        local.up(workspace)
        wt = steps.through_approval(workspace, backend="process")
        before = _walkthrough_objects(wt, tmp_path / "before")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", _terminal_sequence()],
                              cwd=folder, env=env, capture_output=True, text=True, timeout=600)
        after = _walkthrough_objects(wt, tmp_path / "after")
    finally:
        local.down(workspace)
    assert done.returncode == 0, done.stderr[-3000:]
    (summary,) = describe_summary(done.stdout).values()  # input/<node>, the node drawn by the CLI
    assert summary == {
        "count": 8376, "unique": 129, "top": "Viral sinusitis (disorder)", "freq": 1248}
    assert re.search(r"^\s*APPCONFIG_ID [a-z][a-z0-9]{8}: [0-9a-f]{64}$", done.stdout, re.M)
    assert after == before  # the walk-through's own objects are untouched


def _walkthrough_objects(wt, folder: Path) -> dict:
    from nitronb.notebook import steps
    from nitronb.s3 import transfers

    folder.mkdir()
    state = wt.state()
    transfers.download_file(state["input_uri"], folder / "input.enc", workspace=wt.workspace,
                          progress=False)
    datasets = {party: wt.client(party).get_dataset(state[f"{kind}_dataset"])
                for party, kind in (("data-owner", "input"), ("output-owner", "output"))}
    return {"input object": (folder / "input.enc").read_bytes(),
            "datasets": {p: (d["id"], d["location"]) for p, d in datasets.items()},
            "APPCONFIG_ID": steps.approval_status(wt)["appconfig_id"]}

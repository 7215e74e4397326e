#!/usr/bin/env python3
"""Wall time of the notebook walk-through against the same steps as plain Python, in one run.

    python benchmarks/bench_walkthrough.py [--repeat N]

Each side starts from an empty workspace (so both include starting the local stack) on the
process backend:
  notebooks   `nitronb walkthrough` (papermill, one kernel per notebook)
  plain       the `nitronb.notebook.steps` verbs the notebooks call, in one Python process
The ratio is the notebooks' overhead. Target: the walk-through within 45 s on this machine.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

PLAIN = textwrap.dedent("""
    import sys
    from nitronb.notebook import steps
    ws = sys.argv[1]
    steps.start_local_stack(ws)
    steps.generate_keys(ws)
    steps.encrypt_input(ws)
    steps.upload_and_presign(ws)
    steps.create_datasets(ws)
    steps.build_enclave_image(ws, backend="process")
    steps.create_app_configuration(ws)
    steps.create_workflow(ws)
    steps.approve_workflow(ws)
    steps.workflow_picture(ws)
    outcome = steps.run_workflow(ws)
    result = steps.decrypt_output(ws)
    steps.result_table(result); steps.result_chart(result)
    assert outcome.ok and "Viral sinusitis (disorder)" in result.text
""")


def _timed(argv: list[str], workspace: Path) -> float:
    start = time.perf_counter()
    try:
        subprocess.run(argv, check=True, capture_output=True)
        return time.perf_counter() - start
    finally:
        _down(workspace)


def _down(workspace: Path) -> None:
    from nitronb.local import stack as local

    local.down(workspace)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    nitronb = [sys.executable, "-m", "nitronb"]
    notebooks, plain = [], []
    with tempfile.TemporaryDirectory(prefix="bench-walkthrough-") as tmp:
        tmp = Path(tmp)
        for i in range(args.repeat):
            ws = tmp / f"nb{i}"
            notebooks.append(_timed([*nitronb, "walkthrough", "--workspace", str(ws), "--out",
                                     str(tmp / f"run{i}")], ws))
            ws = tmp / f"py{i}"
            plain.append(_timed([sys.executable, "-c", PLAIN, str(ws)], ws))
            print(f"round {i + 1}: notebooks {notebooks[-1]:.1f} s, plain Python "
                  f"{plain[-1]:.1f} s", flush=True)
    nb, py = statistics.median(notebooks), statistics.median(plain)
    print(f"\nmedian of {args.repeat}: nitronb walkthrough {nb:.1f} s (target <= 45 s), "
          f"plain Python {py:.1f} s -> notebooks' overhead {nb / py:.2f}x (+{nb - py:.1f} s)")


if __name__ == "__main__":
    main()

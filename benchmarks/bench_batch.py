#!/usr/bin/env python3
"""Workflows per minute of `nitronb walkthrough --batch` with 1, 4 and 10 runs at a time.

    python benchmarks/bench_batch.py [--runs 1 4 10] [--csv-rows 3000]

One local stack (process backend) in a temporary workspace, started and warmed by one run that
is not counted (it builds the app's image). Then, for each N, a batch of N runs, each its own
slice of the shipped sample CSV, all N at once (--jobs N), timed from the command's start to its
end. Prints each rate and its ratio to the 1-run rate, measured in the same run.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _batch(tmp: Path, workspace: Path, csvs: list[Path], label: str) -> float:
    batch = tmp / f"{label}.yaml"
    batch.write_text("".join(f"- input_csv: {csv}\n" for csv in csvs), encoding="utf-8")
    argv = [sys.executable, "-m", "nitronb", "walkthrough", "--batch", str(batch),
            "--jobs", str(len(csvs)), "--workspace", str(workspace), "--out", str(tmp / label)]
    start = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"the batch {label} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, nargs="+", default=[1, 4, 10])
    parser.add_argument("--csv-rows", type=int, default=3000,
                        help="rows of the sample in each run's CSV (default 3000)")
    args = parser.parse_args()

    from nitronb import sample_path
    from nitronb.local import stack as local

    sample = sample_path().read_text(encoding="utf-8").splitlines(keepends=True)
    header, rows = sample[0], sample[1:]
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        tmp = Path(tmp)
        workspace = tmp / "ws"
        csvs = []
        for i in range(max(args.runs)):
            start = (i * args.csv_rows) % max(1, len(rows) - args.csv_rows)
            csv = tmp / f"part{i:02d}.csv"
            csv.write_text(header + "".join(rows[start:start + args.csv_rows]),
                           encoding="utf-8")
            csvs.append(csv)
        try:
            _batch(tmp, workspace, csvs[:1], "warm-up")
            rates = {}
            for n in args.runs:
                seconds = _batch(tmp, workspace, csvs[:n], f"runs{n}")
                rates[n] = n / seconds * 60
                print(f"{n:3d} runs at once: {seconds:6.1f} s -> {rates[n]:5.2f} workflows/min",
                      flush=True)
        finally:
            local.down(workspace)
    base = rates.get(1) or next(iter(rates.values()))
    print("\n" + "\n".join(f"{n:3d} at once: {rate:5.2f} workflows/min = {rate / base:.2f}x the "
                           "1-run rate" for n, rate in rates.items()))


if __name__ == "__main__":
    main()

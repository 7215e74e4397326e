"""``nitronb walkthrough --batch PARAMS.yaml``: many walk-through runs at once over one local
stack (:mod:`nitronb.notebook.batch`), with their progress on stderr and a summary table on stdout."""

from __future__ import annotations

import argparse
import queue
import sys
from pathlib import Path
from typing import Any

_FINAL = ("ok", "failed", "cancelled")


def run_batch_command(args: argparse.Namespace, parameters: dict[str, Any],
                      texts: dict[str, str], out: Path) -> int:
    """Plan the batch (every run checked before anything starts), run it, print the summary;
    0 if every run succeeded, else 1."""
    import json
    import threading

    from nitronb.notebook import batch
    from nitronb.notebook import runner as notebooks
    from nitronb.errors import BatchError
    from nitronb.notebook.kernels import in_worker
    from nitronb.workspace import workspace_dir

    if args.jobs is not None and args.jobs < 1:
        raise BatchError(f"--jobs takes a number of at least 1, not {args.jobs}.")
    workspace = workspace_dir(args.workspace or parameters.get("workspace") or None)
    chosen = notebooks.walkthrough_notebooks()
    runs = batch.plan_batch(args.batch, out, workspace=workspace, notebooks=chosen,
                            common=parameters, texts=texts)
    jobs = args.jobs or min(4, len(runs))
    print(f"{len(runs)} runs, {jobs} at a time, over the local stack of {workspace} "
          f"(starting it if needed) …", file=sys.stderr, flush=True)
    display = _Display(runs, len(chosen))
    cancel = threading.Event()
    try:
        in_worker(lambda: batch.run_batch(runs, workspace=workspace, jobs=jobs,
                                          notebooks=chosen, on_change=display.post,
                                          cancel=cancel),
                  idle=display.drain, on_interrupt=cancel.set)
    finally:
        display.close()
        out.mkdir(parents=True, exist_ok=True)
        (out / "summary.json").write_text(json.dumps(
            [{"run": r.index, "name": r.name, "input": r.input, "status": r.status,
              "seconds": round(r.seconds, 1), "result": r.result, "error": r.error,
              "folder": str(r.out)} for r in runs], indent=2, ensure_ascii=False) + "\n",
            encoding="utf-8")
        print(summary_table(runs))
        print(f"\nexecuted notebooks in {out}/<run>/, the table in {out}/summary.json; the local "
              "stack is still running (`nitronb local down` stops it).", file=sys.stderr)
    failed = [r for r in runs if r.status != "ok"]
    if failed:
        print(f"nitronb: error: {len(failed)} of {len(runs)} runs failed "
              f"({', '.join(r.name for r in failed)}).", file=sys.stderr)
        return 1
    return 0


def summary_table(runs) -> str:
    """One row per run: name, status, wall time, input CSV, result or error (one line)."""
    rows = [("run", "status", "time", "input", "result")]
    for run in runs:
        seconds = f"{run.seconds:.1f} s" if run.seconds else "-"
        rows.append((run.name, run.status, seconds, run.input,
                     run.result if run.status == "ok" else run.error or run.result or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join([*(cell.ljust(w) for cell, w in zip(row[:4], widths)), row[4]])
                     .rstrip() for row in rows)


class _Display:
    """Progress on stderr as runs advance: a bar over every run's notebooks on a terminal,
    else one line per notebook done and per run ended. Runs' threads :meth:`post`; the main
    thread :meth:`drain`s (so that output never interleaves)."""

    def __init__(self, runs, notebooks: int) -> None:
        self.events: queue.Queue = queue.Queue()
        self.runs = runs
        self.bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=len(runs) * notebooks, desc="notebooks", unit="nb",
                            file=sys.stderr, dynamic_ncols=True, leave=False)
        self._done = {run.name: 0 for run in runs}

    def post(self, run) -> None:
        self.events.put((run.name, run.status, run.notebook, run.done, run.seconds,
                         run.result, run.error))

    def drain(self) -> None:
        while True:
            try:
                name, status, notebook, done, seconds, result, error = self.events.get_nowait()
            except queue.Empty:
                break
            if done > self._done[name]:
                self._done[name] = done
                if self.bar is not None:
                    self.bar.update(1)
                else:
                    print(f"  {name}  {notebook:28} ok", file=sys.stderr, flush=True)
            if status in _FINAL:
                line = f"{name} {status}" + (f" ({seconds:.1f} s)" if seconds else "")
                detail = result if status == "ok" else error
                self._write(f"{line}: {detail}" if detail else line)
        if self.bar is not None:
            counts = {s: sum(r.status == s for r in self.runs) for s in ("running", "ok",
                                                                          "failed")}
            self.bar.set_postfix_str(" · ".join(f"{k} {v}" for k, v in counts.items()))

    def _write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        self.drain()
        if self.bar is not None:
            self.bar.close()

"""``nitronb walkthrough``: every notebook of the walk-through with papermill; ``nitronb lab``."""

from __future__ import annotations

import argparse
import sys

ORDER = 2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("walkthrough", help="run the whole walk-through's notebooks (papermill)",
                       description="Run notebooks 01 to 09 in order with papermill on the local "
                                   "stack (started if needed), keep each executed notebook in "
                                   "the run folder, and print the decrypted result.",
                       epilog=_parameters_help() if "-h" in sys.argv or "--help" in sys.argv
                       else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a notebook parameter (repeatable)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<UTC time>)")
    p.add_argument("--workspace", metavar="DIR",
                   help="workspace (default: $NITRONB_WORKSPACE, else ~/.nitronb)")
    p.set_defaults(handler=run_walkthrough)

    lab = sub.add_parser("lab", help="open JupyterLab on the notebooks",
                         description="Start the local stack and open JupyterLab on the "
                                     "walk-through's notebooks.")
    lab.add_argument("--workspace", metavar="DIR")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER,
                     help="further arguments for `jupyter lab`")
    lab.set_defaults(handler=run_lab)


def _parameters_help() -> str:
    """The notebooks' parameters (name = default  # what), read from their parameters cells."""
    import json

    from nitronb.notebooks import walkthrough_notebooks

    seen: dict[str, str] = {}
    try:
        for notebook in walkthrough_notebooks():
            for cell in json.loads(notebook.read_text())["cells"]:
                if "parameters" in cell.get("metadata", {}).get("tags", []):
                    for line in "".join(cell["source"]).splitlines():
                        name = line.split("=", 1)[0].strip()
                        if "=" in line and name.isidentifier():
                            seen.setdefault(name, f"  {line.strip()}   [{notebook.stem}]")
    except Exception:  # noqa: BLE001 - help must show even without the notebooks
        return ""
    return "notebook parameters (-p NAME VALUE):\n" + "\n".join(seen.values())


def run_walkthrough(args: argparse.Namespace) -> int:
    import time
    from datetime import datetime, timezone
    from pathlib import Path

    from nitronb import notebooks, steps
    from nitronb.errors import NitronbError
    from nitronb.workspace import workspace_dir

    workspace = workspace_dir(args.workspace)
    parameters = {name: notebooks.coerce(value) for name, value in args.parameter}
    if args.workspace:
        parameters["workspace"] = str(workspace)
    out = Path(args.out or f"runs/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    started = time.perf_counter()
    print("starting the local stack …", file=sys.stderr, flush=True)
    steps.start_local_stack(workspace)
    try:
        notebooks.run_notebooks(
            out, parameters,
            on_start=lambda nb: print(f"  {nb.stem:28} …", end="", file=sys.stderr, flush=True),
            on_done=lambda run: print(f" ok ({run.seconds:.1f} s)", file=sys.stderr, flush=True))
    except NitronbError:
        print(" FAILED", file=sys.stderr)
        raise
    print(f"executed notebooks in {out}/ ({time.perf_counter() - started:.1f} s)\n",
          file=sys.stderr)
    result = steps.decrypt_output(workspace)
    print(result.text, end="" if result.text.endswith("\n") else "\n")
    print("\nthe local stack is still running (`nitronb local status`); stop it with "
          "`nitronb local down`.", file=sys.stderr)
    if not result.ok:
        print(f"nitronb: error: the enclave's app exited with code {result.returncode}: "
              f"{result.stderr.decode(errors='replace')[-500:]}", file=sys.stderr)
        return 1
    return 0


def run_lab(args: argparse.Namespace) -> int:
    import os
    import subprocess

    from nitronb import steps
    from nitronb.notebooks import notebooks_dir
    from nitronb.workspace import workspace_dir

    workspace = workspace_dir(args.workspace)
    steps.start_local_stack(workspace)
    env = dict(os.environ, NITRONB_WORKSPACE=str(workspace))
    command = [sys.executable, "-m", "jupyter", "lab", f"--notebook-dir={notebooks_dir()}",
               *[a for a in args.jupyter_args if a != "--"]]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")  # containers and CI machines often run as root
    return subprocess.call(command, env=env)

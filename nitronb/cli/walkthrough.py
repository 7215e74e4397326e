"""``nitronb walkthrough``: every notebook of the walk-through with papermill; ``nitronb lab``:
JupyterLab on a working copy of the notebooks; ``nitronb sample``: the shipped input CSV."""

from __future__ import annotations

import argparse
import sys

ORDER = 2

#: jupyter options that would serve another folder than the working copy
_ROOT_OPTIONS = ("--notebook-dir", "--ServerApp.root_dir", "--ServerApp.notebook_dir",
                 "--NotebookApp.notebook_dir", "--root-dir")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("walkthrough", help="run the whole walk-through's notebooks (papermill)",
                       description="Run notebooks 01 to 09 in order with papermill on the local "
                                   "stack (started if needed), keep each executed notebook in "
                                   "the run folder, and print the decrypted result. Parameters "
                                   "are given as papermill's own command line takes them; "
                                   "relative paths are read from the current folder.",
                       epilog=_parameters_help() if "-h" in sys.argv or "--help" in sys.argv
                       else None,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-p", "--parameters", dest="values", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"),
                   help="a notebook parameter; VALUE reads as papermill's -p does (True, False, "
                        "None, a number, else text) and must suit the parameter (repeatable)")
    p.add_argument("-r", "--parameters_raw", dest="raw", nargs=2, action="append", default=[],
                   metavar=("NAME", "VALUE"), help="a notebook parameter, VALUE as text")
    p.add_argument("-y", "--parameters_yaml", dest="yaml", action="append", default=[],
                   metavar="YAML", help="parameters as a YAML mapping")
    p.add_argument("-f", "--parameters_file", dest="files", action="append", default=[],
                   metavar="FILE", help="parameters from a YAML file (applied first; then -y, "
                                        "-p and -r, a later one winning, as papermill does)")
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<UTC time>)")
    p.add_argument("--workspace", metavar="DIR",
                   help="workspace (default: $NITRONB_WORKSPACE, else ~/.nitronb)")
    p.set_defaults(handler=run_walkthrough)

    lab = sub.add_parser(
        "lab", help="open JupyterLab on a working copy of the notebooks",
        usage="nitronb lab [-h] [--workspace DIR] [--reset] [DIR [JUPYTER_ARGS …]]",
        description="Copy the walk-through's notebooks into DIR (default: <workspace>/notebooks, "
                    "i.e. $NITRONB_WORKSPACE/notebooks, else ~/.nitronb/notebooks) unless copies "
                    "are there already, start the local stack, and open JupyterLab on DIR with "
                    "the 'nitronb' kernel. Edits and autosaves stay in DIR; the installed "
                    "notebooks are never changed. Options for `jupyter lab` itself go after DIR, "
                    "or after `--` (e.g. `nitronb lab -- --port 8899`).")
    lab.add_argument("--workspace", metavar="DIR",
                     help="workspace (default: $NITRONB_WORKSPACE, else ~/.nitronb)")
    lab.add_argument("--reset", action="store_true",
                     help="replace the notebooks in DIR by fresh copies (edits in them are lost)")
    lab.add_argument("dir", nargs="?", metavar="DIR", help="the working copy's folder")
    lab.add_argument("jupyter_args", nargs=argparse.REMAINDER, metavar="JUPYTER_ARGS",
                     help=argparse.SUPPRESS)
    lab.set_defaults(handler=run_lab)

    sample = sub.add_parser("sample", help="write the shipped sample input (conditions.csv)",
                            description="Write the Synthea conditions.csv that the walk-through "
                                        "encrypts by default to FILE.")
    sample.add_argument("file", nargs="?", default="conditions.csv", metavar="FILE",
                        help="where to write it (default: ./conditions.csv)")
    sample.add_argument("--force", action="store_true", help="replace FILE if it exists")
    sample.set_defaults(handler=run_sample)


def _parameters_help() -> str:
    """The notebooks' parameters (name = default  # what), read from their parameters cells."""
    import json

    from nitronb.notebooks import walkthrough_notebooks

    seen: dict[str, str] = {}
    try:
        for notebook in walkthrough_notebooks():
            cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
            for cell in cells:
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

    parameters, texts = notebooks.cli_parameters(values=args.values, raw=args.raw,
                                                 yaml_texts=args.yaml, files=args.files)
    if args.workspace:
        parameters["workspace"] = texts["workspace"] = args.workspace
    # names and types are checked, and relative paths made absolute, before the stack starts
    chosen = notebooks.walkthrough_notebooks()
    parameters = notebooks.prepare_parameters(
        parameters, {nb: notebooks.declared_parameters(nb) for nb in chosen}, texts=texts)
    workspace = workspace_dir(parameters.get("workspace") or None)
    out = Path(args.out or f"runs/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    started = time.perf_counter()
    print("starting the local stack …", file=sys.stderr, flush=True)
    steps.start_local_stack(workspace)
    try:
        notebooks.run_notebooks(
            out, parameters, chosen,
            on_start=lambda nb: print(f"  {nb.stem:28} …", end="", file=sys.stderr, flush=True),
            on_done=lambda run: print(f" ok ({run.seconds:.1f} s)", file=sys.stderr, flush=True))
    except NitronbError:
        print(" FAILED", file=sys.stderr)
        raise
    print(f"executed notebooks in {out}/ ({time.perf_counter() - started:.1f} s)\n",
          file=sys.stderr)
    result = steps.decrypt_output(workspace)
    if result.text:
        shown = result.labelled_text
        print(shown, end="" if shown.endswith("\n") else "\n")
    print("\nthe local stack is still running (`nitronb local status`); stop it with "
          "`nitronb local down`.", file=sys.stderr)
    if not result.ok:
        tail = result.stderr_tail()
        if tail:
            print(f"\nthe app's stderr (last lines):\n{tail}", file=sys.stderr)
        print(f"nitronb: error: {result.error_line()}", file=sys.stderr)
        return 1
    return 0


def run_lab(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    import subprocess
    from pathlib import Path

    from nitronb import notebooks, steps
    from nitronb.errors import NitronbError
    from nitronb.workspace import workspace_dir

    jupyter_args = list(args.jupyter_args)
    if args.dir and args.dir.startswith("-"):  # `nitronb lab -- --port 8899`
        jupyter_args.insert(0, args.dir)
        args.dir = None
    for option in jupyter_args:
        if option.split("=", 1)[0] in _ROOT_OPTIONS:
            raise NitronbError(f"nitronb lab serves the working copy of the notebooks; "
                               f"{option.split('=', 1)[0]} would serve another folder.",
                               hint="Give the folder as `nitronb lab DIR` instead.")
    if importlib.util.find_spec("jupyterlab") is None:
        raise NitronbError("JupyterLab is not installed in this Python.",
                           hint="Install nitronb with its dependencies (python3 dev.py setup).")
    workspace = workspace_dir(args.workspace)
    folder = Path(args.dir).expanduser().resolve() if args.dir else workspace / "notebooks"
    copied, kept = notebooks.working_copy(folder, reset=args.reset)
    if copied:
        print(f"copied {len(copied)} notebooks into {folder}", file=sys.stderr)
    if kept:
        print(f"kept your copies of {len(kept)} notebooks in {folder} (`nitronb lab --reset` "
              f"replaces them by fresh ones)", file=sys.stderr)
    notebooks.ensure_kernelspec()
    steps.start_local_stack(workspace)
    env = dict(os.environ, NITRONB_WORKSPACE=str(workspace))
    command = [sys.executable, "-m", "jupyter", "lab", f"--ServerApp.root_dir={folder}",
               *jupyter_args]
    if hasattr(os, "geteuid") and os.geteuid() == 0 and "--allow-root" not in command:
        command.append("--allow-root")  # containers and CI machines often run as root
    return subprocess.call(command, env=env)


def run_sample(args: argparse.Namespace) -> int:
    import shutil
    from pathlib import Path

    from nitronb import sample_path
    from nitronb.errors import OutputExistsError

    target = Path(args.file)
    if target.is_dir():
        target = target / "conditions.csv"
    if target.exists() and not args.force:
        raise OutputExistsError(target, hint="Pass --force to replace it.")
    shutil.copyfile(sample_path(), target)
    print(f"wrote the shipped sample (Synthea conditions, {target.stat().st_size:,} bytes) to "
          f"{target}", file=sys.stderr)
    return 0

"""``nitronb walkthrough``: every notebook of the walk-through with papermill; ``nitronb lab``:
JupyterLab on a working copy of the notebooks; ``nitronb sample``: the shipped input CSV."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

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
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/<UTC time>); with "
                                                "--batch, one folder per run in it")
    p.add_argument("--batch", metavar="PARAMS.yaml",
                   help="run the walk-through once per mapping of this YAML list (each run's "
                        "parameters; relative paths read from the file's folder), several at a "
                        "time over one local stack; -p/-r/-y/-f then apply to every run")
    p.add_argument("--jobs", type=int, metavar="N",
                   help="with --batch: how many runs at a time (default: 4, at most the runs)")
    p.add_argument("--workspace", metavar="DIR",
                   help="workspace (default: $NITRONB_WORKSPACE, else ~/.nitronb)")
    p.set_defaults(handler=run_walkthrough)

    # `nitronb lab` reads its own arguments (run_lab, _lab_parser): its options anywhere before
    # `--`, everything after `--` for jupyter; here it only collects them all, as they are
    lab = sub.add_parser("lab", help="open JupyterLab on a working copy of the notebooks",
                         add_help=False, prefix_chars="\0")
    lab.add_argument("argv", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    lab.set_defaults(handler=run_lab)

    sample = sub.add_parser("sample", help="write the shipped sample input (conditions.csv)",
                            description="Write the Synthea conditions.csv that the walk-through "
                                        "encrypts by default to FILE.")
    sample.add_argument("file", nargs="?", default="conditions.csv", metavar="FILE",
                        help="where to write it (default: ./conditions.csv)")
    sample.add_argument("--force", action="store_true", help="replace FILE if it exists")
    sample.set_defaults(handler=run_sample)


_LAB_USAGE = "nitronb lab [-h] [--workspace DIR] [--reset] [DIR] [-- JUPYTER_ARGS …]"


def _lab_parser() -> argparse.ArgumentParser:
    lab = argparse.ArgumentParser(
        prog="nitronb lab", usage=_LAB_USAGE, allow_abbrev=False,
        description="Copy the walk-through's notebooks into DIR (default: <workspace>/notebooks, "
                    "i.e. $NITRONB_WORKSPACE/notebooks, else ~/.nitronb/notebooks) unless copies "
                    "are there already, start the local stack, and open JupyterLab on DIR with "
                    "the 'nitronb' kernel. Edits and autosaves stay in DIR; the installed "
                    "notebooks are never changed. nitronb's options go anywhere before `--`; "
                    "options for `jupyter lab` itself go after `--` (e.g. `nitronb lab room -- "
                    "--port 8899`). SIGTERM and SIGINT (Ctrl-C) stop JupyterLab too.")
    lab.add_argument("--workspace", metavar="DIR",
                     help="workspace (default: $NITRONB_WORKSPACE, else ~/.nitronb)")
    lab.add_argument("--reset", action="store_true",
                     help="replace the notebooks in DIR by fresh copies (edits in them are lost)")
    lab.add_argument("dir", nargs="?", metavar="DIR", help="the working copy's folder")
    return lab


def lab_arguments(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """``nitronb lab``'s arguments: its own options (``--workspace``, ``--reset``, ``-h``) and
    DIR anywhere before the first ``--``, what follows it for ``jupyter lab``. Returns
    ``(options, jupyter_args)``; anything else before ``--`` exits with status 2 and one line
    saying where jupyter's options go."""
    cut = argv.index("--") if "--" in argv else len(argv)
    before, after = argv[:cut], argv[cut + 1:]
    parser = _lab_parser()
    options, extras = parser.parse_known_args(before)
    if extras:
        stray = _not_ours(before) or extras
        parser.exit(2, f"nitronb lab: error: unrecognized arguments: {' '.join(stray)}; options "
                       f"for jupyter lab go after --: nitronb lab [DIR] -- {' '.join(stray)}\n")
    return options, after


def _not_ours(argv: list[str]) -> list[str]:
    """The options in ``argv`` that are not nitronb lab's, each with the value after it (if
    that is not an option too), as they would go after ``--``."""
    ours, with_value = {"-h", "--help", "--reset"}, {"--workspace"}
    stray: list[str] = []
    words = iter(argv)
    for word in words:
        name = word.split("=", 1)[0]
        if name in with_value and "=" not in word:
            next(words, None)
        elif word.startswith("-") and name not in ours | with_value:
            stray.append(word)
            value = next(words, None)
            if value is not None and not value.startswith("-"):
                stray.append(value)
            elif value is not None:
                stray.extend(_not_ours([value]))
    return stray


def _parameters_help() -> str:
    """The notebooks' parameters (name = default  # what), read from their parameters cells."""
    import json

    from nitronb.notebook.runner import walkthrough_notebooks

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

    from nitronb.local import stack as local
    from nitronb.notebook import runner as notebooks
    from nitronb.errors import NitronbError
    from nitronb.notebook.kernels import KernelChain, in_worker
    from nitronb.workspace import workspace_dir

    parameters, texts = notebooks.cli_parameters(values=args.values, raw=args.raw,
                                                 yaml_texts=args.yaml, files=args.files)
    out = Path(args.out or f"runs/{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}")
    if args.jobs is not None and not args.batch:
        raise NitronbError("--jobs says how many runs of a batch run at a time; it needs --batch.",
                           hint="Give --batch PARAMS.yaml, or leave --jobs out.")
    if args.batch:
        from nitronb.cli.batch import run_batch_command

        return run_batch_command(args, parameters, texts, out)
    if args.workspace:
        parameters["workspace"] = texts["workspace"] = args.workspace
    # names and types are checked, and relative paths made absolute, before the stack starts
    chosen = notebooks.walkthrough_notebooks()
    parameters = notebooks.prepare_parameters(
        parameters, {nb: notebooks.declared_parameters(nb) for nb in chosen}, texts=texts)
    workspace = workspace_dir(parameters.get("workspace") or None)
    started = time.perf_counter()
    running = all(s["state"] == "running" for s in local.status(workspace).values())
    print("using the running local stack" if running else "starting the local stack …",
          file=sys.stderr, flush=True)
    out.mkdir(parents=True, exist_ok=True)
    notebooks.ensure_kernelspec()
    line = _NotebookLine()
    with KernelChain(notebooks.KERNEL_NAME, log=out / "kernels.log") as kernels:
        try:
            result = in_worker(lambda: _run_all(out, parameters, chosen, kernels, workspace,
                                                line))
        except NitronbError:
            line.end(" FAILED")
            raise
        except BaseException:
            line.end(" stopped")
            raise
    print(f"executed notebooks in {out}/ ({time.perf_counter() - started:.1f} s)\n",
          file=sys.stderr)
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


class _NotebookLine:
    """The line of the running notebook on stderr; on a terminal its seconds count up while
    it runs, so a long step shows it is alive."""

    def __init__(self) -> None:
        import threading

        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: Any = None
        self._label = ""
        self._started = 0.0

    def start(self, notebook: Path) -> None:
        import threading

        self._label, self._started = f"  {notebook.stem:28} …", time.monotonic()
        print(self._label, end="", file=sys.stderr, flush=True)
        if sys.stderr.isatty():
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, daemon=True)
            self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            with self._lock:
                print(f"\r{self._label} {time.monotonic() - self._started:.0f} s\x1b[K", end="",
                      file=sys.stderr, flush=True)

    def end(self, text: str) -> None:
        if self._ticker is not None:
            self._stop.set()
            self._ticker.join()
            self._ticker = None
            with self._lock:
                print(f"\r{self._label}\x1b[K", end="", file=sys.stderr)
        print(text, file=sys.stderr, flush=True)


def _run_all(out, parameters, chosen, kernels, workspace, line: _NotebookLine):
    from nitronb.notebook import runner as notebooks
    from nitronb.notebook import steps
    from nitronb.notebook.kernels import AHEAD

    # in the thread that runs the notebooks (a kernel's client belongs to its event loop): the
    # first notebooks' kernels boot while the stack starts
    kernels.start_ahead(AHEAD)
    steps.start_local_stack(workspace)
    notebooks.run_notebooks(
        out, parameters, chosen, kernels=kernels,
        on_start=line.start, on_done=lambda run: line.end(f" ok ({run.seconds:.1f} s)"))
    result = steps.decrypt_output(workspace)  # while the last kernel shuts down
    kernels.reap()
    return result


def run_lab(args: argparse.Namespace) -> int:
    import importlib.util
    import os
    from pathlib import Path

    from nitronb.notebook import runner as notebooks
    from nitronb.notebook import steps
    from nitronb.errors import NitronbError
    from nitronb.workspace import workspace_dir

    args, jupyter_args = lab_arguments(list(args.argv))
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
    return run_forwarding_signals(command, env=env)


def run_forwarding_signals(command: list[str], *, env: dict[str, str] | None = None) -> int:
    """Run ``command`` and wait for it, passing SIGTERM and SIGINT on to it: stopping this
    process stops the child too, and this returns only once the child has ended. Returns its
    exit status (128 + N for a child ended by signal N, as a shell reports it)."""
    import signal
    import subprocess

    child = subprocess.Popen(command, env=env)

    def forward(signum: int, _frame) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    forwarded = (signal.SIGTERM, signal.SIGINT)
    previous = {signum: signal.signal(signum, forward) for signum in forwarded}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 128 - code if code < 0 else code


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

"""``nitronb kernel install | show``: the Jupyter kernel the walk-through's notebooks run on."""

from __future__ import annotations

import argparse
import sys

ORDER = 4


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("kernel", help="install the notebooks' Jupyter kernel ('nitronb')",
                       description="The notebooks name the Jupyter kernel 'nitronb' (display "
                                   "name 'Python 3 (nitronb)'): this Python, where nitronb is "
                                   "installed, whatever other 'python3' kernel Jupyter knows.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB")
    verbs.required = True
    q = verbs.add_parser("install", help="install (or refresh) the kernelspec",
                         description="Install the 'nitronb' kernelspec into "
                                     f"{sys.prefix}/share/jupyter/kernels/nitronb (or, with "
                                     "--user, the user's Jupyter folder). Installing again "
                                     "replaces it.")
    q.add_argument("--user", action="store_true", help="install for this user only")
    q.set_defaults(handler=run_install)
    q = verbs.add_parser("show", help="where Jupyter finds the kernelspec, and what it runs")
    q.set_defaults(handler=run_show)


def run_install(args: argparse.Namespace) -> int:
    from nitronb.notebook.runner import KERNEL_DISPLAY_NAME, KERNEL_NAME, install_kernelspec

    folder = install_kernelspec(user=args.user)
    print(f"installed the kernel {KERNEL_NAME!r} ({KERNEL_DISPLAY_NAME}) in {folder}: "
          f"{sys.executable}")
    return 0


def run_show(args: argparse.Namespace) -> int:
    import json

    from nitronb.notebook.runner import KERNEL_NAME, find_kernelspec

    folder = find_kernelspec()
    if folder is None:
        print(f"no kernel {KERNEL_NAME!r} is installed; `nitronb kernel install` installs it.")
        return 1
    argv = json.loads((folder / "kernel.json").read_text(encoding="utf-8"))["argv"]
    print(f"{KERNEL_NAME}: {folder}\n  runs {' '.join(argv)}")
    return 0 if argv and argv[0] == sys.executable else 1

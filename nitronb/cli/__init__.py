"""The ``nitronb`` command line: parses, then calls the library.

Each command group lives in its own module of this package and exposes ``register(subparsers)``
and an integer ``ORDER`` (its place in ``--help``). Modules here import nothing heavy at import
time: handlers import what they need when they run.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import Sequence

from nitronb.errors import NitronbError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nitronb",
        description="The Nitro Workflow of a confidential computing manager, step by step.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"nitronb {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    modules = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        modules.append(importlib.import_module(f"{__name__}.{info.name}"))
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(sub)
    return parser


def _version() -> str:
    from nitronb import __version__

    return __version__


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except NitronbError as exc:
        print(f"nitronb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nitronb: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (``nitronb … | head``): nothing more to say
        sys.stderr.close()
        return 141
    return int(code or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

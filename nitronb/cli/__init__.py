"""The ``nitronb`` command line: parses, then calls the library.

Each command group lives in its own module of this package, listed in ``COMMANDS``, and exposes
``register(subparsers)`` and an integer ``ORDER`` (its place in ``--help``). Only the module of
the command being run is loaded, and modules here import nothing heavy at import time: handlers
import what they need when they run.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from nitronb.errors import NitronbError


#: each command and the module of this package that registers it
COMMANDS = {
    "walkthrough": "walkthrough", "lab": "walkthrough", "sample": "walkthrough",
    "kernel": "kernel", "local": "local", "keygen": "keys",
    "aes": "aes", "upload": "storage", "download": "storage", "presign": "storage",
    "ccm": "ccm", "image": "image", "run": "run", "result": "result",
    "attestation": "attestation",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; with a known ``command``, only that command's module is loaded (start-up)."""
    parser = argparse.ArgumentParser(
        prog="nitronb",
        description="The Nitro Workflow of a confidential computing manager, step by step.",
        allow_abbrev=False,
        formatter_class=lambda prog: argparse.HelpFormatter(prog, max_help_position=28),
    )
    parser.add_argument("--version", action="version", version=f"nitronb {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    names = [COMMANDS[command]] if command in COMMANDS else sorted(set(COMMANDS.values()))
    modules = [importlib.import_module(f"{__name__}.{name}") for name in names]
    for module in sorted(modules, key=lambda m: getattr(m, "ORDER", 100)):
        module.register(sub)
    return parser


def _version() -> str:
    from nitronb import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    _tolerant_output()
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(command).parse_args(argv)
    restore = _terminate_on_signals()
    try:
        code = args.handler(args)
    except _Terminated as exc:
        # raised inside the handler, so its cleanup (temporary files removed) has run
        print(f"nitronb: terminated by {signal.Signals(exc.signum).name}", file=sys.stderr)
        return 128 + exc.signum
    except NitronbError as exc:
        print(f"nitronb: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("nitronb: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        # a path or device the handler did not check (missing folder, disk full …): one line
        where = f": {exc.filename}" if exc.filename else ""
        print(f"nitronb: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader went away (``nitronb … | head``): nothing more to say
        sys.stderr.close()
        return 141
    finally:
        restore()
    return int(code or 0)


class _Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while a command ran (``signum``: the signal's number)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _terminate_on_signals():
    """Make SIGTERM and SIGHUP raise :class:`_Terminated` in the running command, so that its
    ``finally`` blocks run (a decryption's temporary file is removed); return the function that
    puts the previous handlers back. A signal already ignored (``nohup``) stays ignored; SIGKILL
    cannot be caught. Outside the main thread nothing is changed."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def terminate(signum, frame):
        raise _Terminated(signum)

    previous = {}
    for signum in (signal.SIGTERM, getattr(signal, "SIGHUP", None)):
        if signum is not None and signal.getsignal(signum) is signal.SIG_DFL:
            previous[signum] = signal.signal(signum, terminate)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def _tolerant_output() -> None:
    """A terminal whose encoding cannot show a character (``…`` under ``LC_ALL=C``) gets its
    escape (``\\u2026``) rather than a crash."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):  # a closed or detached stream: leave it
                pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

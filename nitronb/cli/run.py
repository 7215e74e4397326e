"""``nitronb run``: launch a workflow's enclave image with its APPCONFIG_ID."""

from __future__ import annotations

import argparse
import sys

ORDER = 60


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an enclave image for an approved workflow",
                       description="Launch IMAGE through the node agent with APPCONFIG_ID: the "
                                   "enclave attests, is provisioned by the manager, runs the app "
                                   "and uploads its encrypted result. Exits with the app's code. "
                                   "With --enclave ID instead, follow (or report) an enclave "
                                   "launched before.")
    p.add_argument("image", metavar="IMAGE", nargs="?",
                   help="enclave image: a container image reference, or a process image folder")
    p.add_argument("--appconfig-id", metavar="ID", type=str.lower,
                   help="the APPCONFIG_ID returned when the workflow was approved (with IMAGE)")
    p.add_argument("--enclave", metavar="ENCLAVE_ID",
                   help="launch nothing: wait for the enclave the node agent launched with this "
                        "id to end (or read how it ended) and report it like a run")
    p.add_argument("--node-agent", metavar="URL", help="node agent URL (default: the local stack)")
    p.add_argument("--ccm", metavar="URL", help="manager URL (default: the local stack)")
    p.add_argument("--backend", choices=("auto", "container", "process"), default="auto",
                   help="where the enclave runs (default: a container engine when reachable)")
    p.add_argument("--timeout", type=float, default=900, metavar="SECONDS")
    p.add_argument("--workspace", metavar="DIR",
                   help="workspace of the local stack (default: $NITRONB_WORKSPACE, else "
                        "~/.nitronb)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nitronb.errors import NitronbError
    from nitronb.enclave.runner import follow_enclave, run_enclave

    def on_log(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    if args.enclave:
        if args.image or args.appconfig_id:
            raise NitronbError("--enclave follows an enclave launched before: give no IMAGE and "
                               "no --appconfig-id with it.",
                               hint="Run `nitronb run --enclave ID` alone.")
        outcome = follow_enclave(args.enclave, node_agent=args.node_agent, timeout=args.timeout,
                                 workspace=args.workspace, on_log=on_log)
    else:
        if not args.image or not args.appconfig_id:
            raise NitronbError("nitronb run needs IMAGE and --appconfig-id ID (or --enclave ID "
                               "to follow an enclave launched before).",
                               hint="See `nitronb run --help`.")
        outcome = run_enclave(args.image, args.appconfig_id, node_agent=args.node_agent,
                              ccm=args.ccm, backend=args.backend, timeout=args.timeout,
                              workspace=args.workspace, on_log=on_log)
    verdict = "finished" if outcome.ok else f"failed with exit code {outcome.exit_code}"
    killed = _signal_name(outcome.exit_code)
    if killed:
        verdict = f"was killed by {killed}"
    print(f"enclave {outcome.enclave_id} ({outcome.backend}) {verdict} in "
          f"{outcome.seconds:.1f} s", file=sys.stderr)
    if outcome.refused:
        print(f"nitronb: error: the enclave was refused: {outcome.refused}", file=sys.stderr)
    elif killed:
        print(f"nitronb: error: the enclave was killed by {killed} before it finished",
              file=sys.stderr)
    elif outcome.reason:
        print(f"nitronb: error: the enclave failed: {outcome.reason}", file=sys.stderr)
    return 128 - outcome.exit_code if killed else outcome.exit_code


def _signal_name(code: int) -> str | None:
    """``SIGKILL`` for the code -9 of a process a signal ended; None for an exit code."""
    import signal

    if code >= 0:
        return None
    try:
        return signal.Signals(-code).name
    except ValueError:
        return f"signal {-code}"

"""``nitronb local up | status | down``: the embedded local stack."""

from __future__ import annotations

import argparse
import json

ORDER = 5


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("local", help="start, show or stop the embedded local stack",
                       description="The local stack: an S3 endpoint and, when installed, the "
                                   "manager and the node agent, on 127.0.0.1. State, "
                                   "credentials and logs live in the workspace "
                                   "($NITRONB_WORKSPACE, else ~/.nitronb).")
    p.add_argument("action", choices=("up", "status", "down"))
    p.add_argument("--workspace", metavar="DIR", help="the workspace folder")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nitronb.local import stack as local

    verb = {"up": local.up, "status": local.status, "down": local.down}[args.action]
    report = verb(args.workspace)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
        return 0
    if not report:
        print("the local stack has no services installed")
    for name, entry in report.items():
        where = f"  {entry['url']}  (pid {entry['pid']})" if entry["url"] else ""
        print(f"{name:<12} {entry['state']}{where}")
        if entry.get("killed"):
            print(f"{'':<12} {entry['killed']}")
    if args.action == "status":
        return 0
    wanted = "running" if args.action == "up" else "stopped"
    return 0 if all(e["state"] == wanted for e in report.values()) else 1

"""``nitronb result``: decrypt a run result and print what the enclave's app printed."""

from __future__ import annotations

import argparse
import sys

ORDER = 65


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("result", help="decrypt a run result and print the app's output",
                       description="Decrypt FILE, a run result the enclave uploaded "
                                   '({"returncode", "stdout", "stderr"} encrypted with the output '
                                   "key), print the app's stdout, and exit 0 if the app "
                                   "succeeded; else print the end of its stderr and its error in "
                                   "one line, and exit 1.")
    p.add_argument("file", metavar="FILE", help="the encrypted run result")
    p.add_argument("-K", "--key-file", required=True, metavar="FILE",
                   help="the output owner's key file")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nitronb.keys import read_key_file
    from nitronb.results import decrypt_run_result

    result = decrypt_run_result(read_key_file(args.key_file), args.file)
    if result.text:
        sys.stdout.write(result.text if result.text.endswith("\n") else result.text + "\n")
    if result.ok:
        return 0
    tail = result.stderr_tail()
    if tail:
        print(f"the app's stderr (last lines):\n{tail}", file=sys.stderr)
    print(f"nitronb: error: {result.error_line()}", file=sys.stderr)
    return 1

"""``nitronb keygen``: a new AES-256 key."""

from __future__ import annotations

import argparse
import sys

ORDER = 10


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("keygen", help="generate an AES-256 key (64 upper-case hex characters)",
                       description="Generate a random AES-256 key as 64 upper-case hex characters. "
                                   "With -o the key goes to a file of mode 0600 and only its "
                                   "fingerprint is printed.")
    p.add_argument("-o", "--out", metavar="FILE", help="write the key to FILE (mode 0600)")
    p.add_argument("-f", "--force", action="store_true", help="replace FILE if it exists")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nitronb.keys import fingerprint, generate_key, write_key_file

    if args.out is None or args.out == "-":
        sys.stdout.write(generate_key() + "\n")
        return 0
    key = write_key_file(args.out, overwrite=args.force)
    print(f"wrote key with fingerprint {fingerprint(key)} to {args.out} (mode 0600)",
          file=sys.stderr)
    return 0

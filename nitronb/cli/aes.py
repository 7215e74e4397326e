"""``nitronb aes enc|dec``: the encrypted-file format, with the original ``aes_256_gcm.py`` flags."""

from __future__ import annotations

import argparse
import sys

ORDER = 20


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("aes", help="encrypt or decrypt a file with AES-256-GCM",
                       description="Encrypt or decrypt in the format nonce(12) | ciphertext | "
                                   "tag(16). '-' reads stdin or writes stdout. A decryption "
                                   "that fails, or is stopped by SIGTERM, SIGHUP or Ctrl-C, "
                                   "writes nothing (unless the process is killed with SIGKILL, "
                                   "which leaves a private .part file beside the target).")
    p.add_argument("mode", choices=("enc", "dec"), help="enc to encrypt, dec to decrypt")
    p.add_argument("-K", "--key", required=True, metavar="KEYFILE",
                   help="key file: 64 hex characters")
    p.add_argument("-in", "--in", dest="infile", required=True, metavar="IN",
                   help="input file, or - for stdin; a pipe, a FIFO or /dev/stdin is read to "
                        "its end")
    p.add_argument("-out", "--out", dest="outfile", required=True, metavar="OUT",
                   help="output file, or - for stdout")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from nitronb import crypto
    from nitronb.keys import read_key_file

    key = read_key_file(args.key)
    show = sys.stderr.isatty()
    if args.infile != "-" and args.outfile != "-":
        verb = crypto.encrypt_file if args.mode == "enc" else crypto.decrypt_file
        verb(key, args.infile, args.outfile, progress=show)
        return 0
    src = sys.stdin.buffer if args.infile == "-" else open(args.infile, "rb")
    try:
        if args.outfile == "-":
            _stream(args.mode, key, src, sys.stdout.buffer, args.infile, show)
            sys.stdout.buffer.flush()
        else:
            # a file output from stdin: still atomic, via a temporary file beside it (a device
            # or a pipe is written in place; decryption reaches it only once verified)
            target, special = crypto._output_target(args.outfile)
            if special:
                with open(target, "wb") as dst:
                    _stream(args.mode, key, src, dst, "stdin", show)
            else:
                mode = 0o600 if args.mode == "dec" else 0o666 & ~crypto._umask()
                with crypto._AtomicOutput(target, mode=mode) as dst:
                    _stream(args.mode, key, src, dst, "stdin", show)
    finally:
        if src is not sys.stdin.buffer:
            src.close()
    return 0


def _stream(mode, key, src, dst, name, show) -> None:
    from nitronb import crypto

    if mode == "enc":
        crypto.encrypt_stream(key, src, dst, progress=show)
    else:
        crypto.decrypt_stream(key, src, dst, name=name, progress=show)

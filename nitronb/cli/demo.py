"""``nitronb demo``: the main job on the embedded default."""

from __future__ import annotations

import argparse

ORDER = 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the shipped sample",
                       description="Generate a key, encrypt the shipped Synthea sample, decrypt "
                                   "it again and check the round trip, in a run folder.")
    p.add_argument("--out", default="runs/demo", metavar="DIR",
                   help="run folder (default: runs/demo)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from nitronb import sample_path
    from nitronb.crypto import decrypt_file, encrypt_file
    from nitronb.keys import redact, write_key_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sample = sample_path()
    key = write_key_file(out / "input_key.hex", overwrite=True)
    print(f"1. key          {redact(key)} -> {out / 'input_key.hex'} (mode 0600)")
    encrypt_file(key, sample, out / "conditions.csv.enc")
    print(f"2. encrypted    {sample.name} ({sample.stat().st_size:,} bytes) -> "
          f"{out / 'conditions.csv.enc'}")
    decrypt_file(key, out / "conditions.csv.enc", out / "conditions.csv")
    same = _sha256(out / "conditions.csv") == _sha256(sample)
    print(f"3. decrypted    -> {out / 'conditions.csv'}: "
          f"{'identical to the input' if same else 'DIFFERS from the input'}")
    return 0 if same else 1


def _sha256(path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()

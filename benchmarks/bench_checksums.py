#!/usr/bin/env python3
"""What the local S3 endpoint's body checksums cost, against the MD5 it computes on every body.

    python benchmarks/bench_checksums.py [SIZE_MB] [--repeat N]

Each S3 checksum (nitronb.local.s3digest.new_checksum: CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256)
hashes SIZE_MB (default 256) of random bytes in the endpoint's 256 KiB pieces; the reference is
hashlib's MD5 over the same pieces in the same run, which the endpoint computes for the ETag of
every body whatever its headers ask. Prints MB/s and the time of each as a ratio of MD5's (the
best of N runs). Target: every checksum at most 1.0x MD5, so that asking for one at most doubles
the hashing of an upload.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nitronb.local.s3digest import CHECKSUMS, new_checksum  # noqa: E402
from nitronb.local.s3stream import PIECE  # noqa: E402


def _best(make, data: memoryview, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        digest = make()
        for offset in range(0, len(data), PIECE):
            digest.update(data[offset:offset + PIECE])
        digest.digest()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size_mb", nargs="?", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = memoryview(os.urandom(args.size_mb * 1_000_000))
    reference = _best(lambda: hashlib.md5(usedforsecurity=False), data, args.repeat)
    print(f"{'algorithm':<10} {'MB/s':>8} {'x MD5':>7}")
    print(f"{'MD5':<10} {args.size_mb / reference:>8.0f} {1.0:>7.2f}")
    for lower, (name, _, _) in CHECKSUMS.items():
        took = _best(lambda: new_checksum(lower), data, args.repeat)
        print(f"{name:<10} {args.size_mb / took:>8.0f} {took / reference:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Transfers against the local S3 endpoint: nitronb beside boto3's default upload_file/download_file.

    python benchmarks/bench_storage.py [SIZE_MB]      (default 512)

Each transfer runs in its own child process, which reports its wall time, its own CPU time
(not the endpoint's: that runs in another process, on the same cores) and its own peak
resident memory (VmHWM). After one unmeasured warm-up upload, each round runs both sides, the
order alternating between rounds; the best time of each is kept. Prints throughput, client
CPU, peak RSS and nitronb/boto3 ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

MiB = 1024 * 1024

_CHILD = r"""
import json, sys, time
kind, src, dst = sys.argv[1:4]
from nitronb.s3.client import client_for
from nitronb.s3.transfers import upload_file, download_file
client = client_for("local")
start, cpu = time.perf_counter(), time.process_time()
if kind == "nitronb-upload":
    upload_file(src, dst, client=client)
elif kind == "boto3-upload":
    bucket, _, key = dst[len("s3://"):].partition("/")
    client.upload_file(src, bucket, key)
elif kind == "nitronb-download":
    download_file(src, dst, client=client)
elif kind == "boto3-download":
    bucket, _, key = src[len("s3://"):].partition("/")
    client.download_file(bucket, key, dst)
seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
status = open("/proc/self/status").read()
peak = int(status.split("VmHWM:")[1].split()[0]) * 1024
print(json.dumps({"seconds": seconds, "cpu": cpu, "peak_rss": peak}))
"""


def _run(kind: str, src: str, dst: str, env: dict[str, str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", _CHILD, kind, src, dst], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{kind} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(MiB), b""):
            digest.update(chunk)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("size_mb", nargs="?", type=int, default=512, help="object size in MiB")
    parser.add_argument("--rounds", type=int, default=1, help="repeat each transfer (best kept)")
    args = parser.parse_args()

    from nitronb.local import stack as local

    with tempfile.TemporaryDirectory(prefix="nitronb-bench-") as tmp:
        folder = Path(tmp)
        workspace = folder / "ws"
        env = {**os.environ, "NITRONB_WORKSPACE": str(workspace)}
        source = folder / "object.bin"
        with open(source, "wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(MiB))
        size = source.stat().st_size
        local.up(workspace, only=["s3"])
        try:
            # warm the endpoint up (its first large object pays for growing its memory)
            _run("boto3-upload", str(source), "s3://nitronb/bench/warm-up.bin", env)
            results: dict[str, dict[str, float]] = {}
            for round_number in range(args.rounds):
                uploads = [("nitronb-upload", str(source), "s3://nitronb/bench/nitronb.bin"),
                           ("boto3-upload", str(source), "s3://nitronb/bench/boto3.bin")]
                downloads = [("nitronb-download", "s3://nitronb/bench/nitronb.bin",
                              str(folder / "nitronb.out")),
                             ("boto3-download", "s3://nitronb/bench/boto3.bin",
                              str(folder / "boto3.out"))]
                if round_number % 2:  # alternate who goes first
                    uploads.reverse()
                    downloads.reverse()
                for kind, src, dst in uploads + downloads:
                    result = _run(kind, src, dst, env)
                    print(f"  round {round_number + 1}: {kind:<17} {result['seconds']:6.2f} s "
                          f"(client CPU {result['cpu']:5.2f} s)", flush=True)
                    best = results.get(kind)
                    if best is None or result["seconds"] < best["seconds"]:
                        results[kind] = result
            expected = _sha256(source)
            for name in ("nitronb.out", "boto3.out"):
                if _sha256(folder / name) != expected:
                    print(f"warning: {name} differs from the source")
        finally:
            local.down(workspace)

    print(f"object: {size / MiB:.0f} MiB against the local S3 endpoint "
          f"(best of {args.rounds}, each side in its own process)")
    print(f"{'transfer':<18}{'seconds':>9}{'MiB/s':>9}{'client CPU s':>14}{'peak RSS MiB':>14}")
    for kind, r in results.items():
        print(f"{kind:<18}{r['seconds']:>9.2f}{size / MiB / r['seconds']:>9.1f}"
              f"{r['cpu']:>14.2f}{r['peak_rss'] / MiB:>14.1f}")
    for verb in ("upload", "download"):
        ours, theirs = results[f"nitronb-{verb}"], results[f"boto3-{verb}"]
        print(f"{verb}: throughput nitronb/boto3 = {theirs['seconds'] / ours['seconds']:.2f}x "
              f"(target >= 1.0x); peak RSS nitronb {ours['peak_rss'] / MiB:.0f} MiB "
              f"(target <= 128 MiB), boto3 {theirs['peak_rss'] / MiB:.0f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

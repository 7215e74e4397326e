#!/usr/bin/env python3
"""The walk-through from 1 MB to 1 GB of input against the floor of its data path, in one run.

    python benchmarks/bench_scale.py [--sizes 1,100,1000] [--keep]

For each input size (MB of CSV: the shipped Synthea sample's rows repeated) a fresh workspace
gets its own local stack (started untimed), then, on that stack:

  floor        bare library calls on the same data path, in one Python process: streaming
               AES-256-GCM encryption (cryptography), boto3 ``upload_file``, a presigned GET
               URL, a streaming download of it (requests), streaming decryption, and pandas
               reading the ``DESCRIPTION`` column and describing it
  walkthrough  ``nitronb walkthrough -p input_csv CSV`` (papermill, every notebook; the stack
               is already up)

The fixed costs (kernels, images, approvals) cancel in the marginal time per GB,
``(T(size) - T(smallest)) / (size - smallest)``; the ratio walkthrough/floor of those is the
walk-through's overhead on the data path (goal: <= 1.2).

A sampler thread reads the peak resident memory (``VmHWM`` in ``/proc/PID/status``) of every
process of the run every 50 ms, by role: the local S3 endpoint, the manager, the node agent, the
enclave launcher, the enclave app and its analysis (``describe.py``), the notebook kernels, the floor process (goal: every local
service <= 128 MiB whatever the size; the launcher flat; the app's own pandas memory is the
app's). Prints a table; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

MiB = 1024 * 1024
ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable

#: role -> a test on a process's command line (argv joined by spaces)
ROLES = {
    "s3 endpoint": lambda c: "nitronb.local.s3gate" in c,
    "manager": lambda c: "nitronb.ccm.server" in c,
    "node agent": lambda c: "nitronb.enclave.node_agent_api" in c,
    "launcher": lambda c: "runpy.run_module('nitronb.enclave_os.launcher'" in c and "bwrap" not in c,
    "enclave app": lambda c: "start.py" in c and "bwrap" not in c,
    "app analysis": lambda c: "describe.py" in c and "bwrap" not in c,
    "kernels": lambda c: "ipykernel" in c,
    "floor": lambda c: "bench_scale_floor" in c,
}

FLOOR = r"""
import json, os, sys, time  # bench_scale_floor
import pandas as pd, requests
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from nitronb.s3.client import client_for

csv, work, ws = sys.argv[1:4]
client = client_for("local", workspace=ws)  # a plain boto3 client for the local endpoint
key, nonce, chunk = os.urandom(32), os.urandom(12), 1 << 20
start = time.perf_counter()
marks = {}
enc = os.path.join(work, "floor.enc")
encryptor = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()
with open(csv, "rb") as src, open(enc, "wb") as dst:
    dst.write(nonce)
    while block := src.read(chunk):
        dst.write(encryptor.update(block))
    dst.write(encryptor.finalize() + encryptor.tag)
marks["encrypt"] = time.perf_counter()
client.upload_file(enc, "nitronb", "floor/input.enc")
url = client.generate_presigned_url("get_object", Params={"Bucket": "nitronb",
                                                          "Key": "floor/input.enc"},
                                    ExpiresIn=3600)
marks["upload"] = time.perf_counter()
got = os.path.join(work, "floor.got")
with requests.get(url, stream=True, timeout=60) as reply, open(got, "wb") as dst:
    reply.raise_for_status()
    for block in reply.iter_content(chunk):
        dst.write(block)
size = os.path.getsize(got)
marks["download"] = time.perf_counter()
plain = os.path.join(work, "floor.csv")
with open(got, "rb") as src, open(plain, "wb") as dst:
    decryptor = Cipher(algorithms.AES(key), modes.GCM(src.read(12))).decryptor()
    left = size - 12 - 16
    while left > 0:
        block = src.read(min(chunk, left))
        left -= len(block)
        dst.write(decryptor.update(block))
    decryptor.finalize_with_tag(src.read(16))
marks["decrypt"] = time.perf_counter()
column = pd.read_csv(plain, usecols=["DESCRIPTION"])["DESCRIPTION"]
print(column.describe().to_dict()["top"], file=sys.stderr)
marks["pandas"] = time.perf_counter()
last, phases = start, {}
for name, at in marks.items():
    phases[name], last = at - last, at
print(json.dumps({"total": time.perf_counter() - start, "phases": phases}))
"""


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


def _hwm(pid: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


class Sampler(threading.Thread):
    """Peak resident memory per role while it runs (the largest process of each role)."""

    def __init__(self, workspace: Path) -> None:
        super().__init__(daemon=True)
        self.workspace = str(workspace)
        self.peaks: dict[str, int] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.is_set():
            for pid in os.listdir("/proc"):
                if not pid.isdigit():
                    continue
                line = _cmdline(pid)
                if not line:
                    continue
                for role, test in ROLES.items():
                    if test(line) and (role in ("floor", "enclave app", "app analysis", "launcher",
                                                    "kernels")
                                       or self.workspace in line):
                        self.peaks[role] = max(self.peaks.get(role, 0), _hwm(pid))
                        break
            self._done.wait(0.05)

    def stop(self) -> dict[str, int]:
        self._done.set()
        self.join()
        return self.peaks


def make_csv(path: Path, megabytes: float) -> int:
    """The Synthea sample's rows repeated to about ``megabytes`` MB; the file's size in bytes."""
    sample = path.parent / "sample.csv"
    subprocess.run([PYTHON, "-m", "nitronb", "sample", str(sample), "--force"], check=True,
                   capture_output=True)
    header, _, body = sample.read_bytes().partition(b"\n")
    target = int(megabytes * 1_000_000)
    with open(path, "wb") as out:
        out.write(header + b"\n")
        written = len(header) + 1
        while written < target:
            piece = body[: target - written] if written + len(body) > target else body
            if piece is not body:  # end on a whole row
                piece = piece[: piece.rfind(b"\n") + 1] or body
            out.write(piece)
            written += len(piece)
    return path.stat().st_size


def _nitronb(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "nitronb", *args], env=env, capture_output=True,
                          text=True)


def one_size(megabytes: float, base: Path) -> dict:
    folder = base / f"{megabytes:g}MB"
    folder.mkdir()
    csv = folder / "input.csv"
    size = make_csv(csv, megabytes)
    ws = folder / "workspace"
    env = dict(os.environ, NITRONB_WORKSPACE=str(ws))
    up = _nitronb("local", "up", "--workspace", str(ws), env=env)
    if up.returncode:
        sys.exit(f"nitronb local up failed:\n{up.stderr}")
    sampler = Sampler(ws)
    sampler.start()
    try:
        floor = subprocess.run([PYTHON, "-c", FLOOR, str(csv), str(folder), str(ws)],
                               env=env, capture_output=True, text=True)
        if floor.returncode:
            sys.exit(f"the floor failed:\n{floor.stderr}")
        floor_out = json.loads(floor.stdout.strip().splitlines()[-1])
        start = time.perf_counter()
        run = _nitronb("walkthrough", "--workspace", str(ws), "--out", str(folder / "run"),
                       "-p", "input_csv", str(csv), env=env)
        walk_s = time.perf_counter() - start
        if run.returncode:
            sys.exit(f"the walk-through failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    finally:
        peaks = sampler.stop()
        _nitronb("local", "down", "--workspace", str(ws), env=env)
    for leftover in ("floor.enc", "floor.got", "floor.csv"):
        (folder / leftover).unlink(missing_ok=True)
    notebooks = {}
    for executed in sorted((folder / "run").glob("*.ipynb")):
        meta = json.loads(executed.read_text(encoding="utf-8"))["metadata"].get("papermill", {})
        notebooks[executed.stem[:2]] = meta.get("duration") or 0.0
    return {"mb": megabytes, "bytes": size, "floor": floor_out["total"],
            "floor_phases": floor_out["phases"], "walkthrough": walk_s,
            "notebooks": notebooks, "peaks": peaks}


def _best(measured: list[dict]) -> dict:
    """One size's rounds folded: the fastest of each side, the largest of each peak."""
    row = dict(min(measured, key=lambda r: r["walkthrough"]))
    floor = min(measured, key=lambda r: r["floor"])
    row["floor"], row["floor_phases"] = floor["floor"], floor["floor_phases"]
    row["peaks"] = {role: max(r["peaks"].get(role, 0) for r in measured) for role in ROLES}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,100,1000",
                        help="input sizes in MB, comma-separated (default 1,100,1000)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="rounds over every size; the fastest time of each is kept")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    sizes = sorted(float(s) for s in args.sizes.split(","))
    base = Path(tempfile.mkdtemp(prefix="nitronb-scale-"))
    measured: dict[float, list[dict]] = {size: [] for size in sizes}
    try:
        for round_no in range(1, args.rounds + 1):
            for megabytes in sizes:
                print(f"round {round_no}: {megabytes:g} MB …", file=sys.stderr, flush=True)
                folder = base / f"round{round_no}"
                folder.mkdir(exist_ok=True)
                measured[megabytes].append(one_size(megabytes, folder))
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
        else:
            print(f"kept {base}", file=sys.stderr)
    rows = [_best(measured[size]) for size in sizes]

    print(f"\n{'input':>8} {'floor s':>9} {'walk s':>9}   peak RSS MiB: "
          + " ".join(f"{r:>12}" for r in ROLES))
    for row in rows:
        print(f"{row['mb']:>6g}MB {row['floor']:>9.2f} {row['walkthrough']:>9.2f}   "
              f"{'':13}" + " ".join(f"{row['peaks'].get(r, 0) / MiB:>12.1f}" for r in ROLES))
    print("\nwhere the time goes (s): floor "
          + ", ".join(rows[0]["floor_phases"]) + "; walk-through by notebook")
    for row in rows:
        print(f"  {row['mb']:>6g}MB floor "
              + " ".join(f"{v:6.2f}" for v in row["floor_phases"].values())
              + "   notebooks " + " ".join(f"{k}:{v:.1f}" for k, v in row["notebooks"].items()))
    smallest = rows[0]
    print(f"\nmarginal time per GB against {smallest['mb']:g} MB:")
    for row in rows[1:]:
        gigabytes = (row["bytes"] - smallest["bytes"]) / 1e9
        floor = (row["floor"] - smallest["floor"]) / gigabytes
        walk = (row["walkthrough"] - smallest["walkthrough"]) / gigabytes
        print(f"  {row['mb']:>6g} MB: floor {floor:7.1f} s/GB, walk-through {walk:7.1f} s/GB, "
              f"ratio {walk / floor:.2f} (goal <= 1.2)")
    services = ("s3 endpoint", "manager", "node agent")
    worst = max(row["peaks"].get(r, 0) for row in rows for r in services) / MiB
    print(f"largest peak RSS of a local service: {worst:.1f} MiB (goal <= 128)")
    launcher = [row["peaks"].get("launcher", 0) / MiB for row in rows]
    print("launcher peak RSS by size: " + ", ".join(f"{v:.1f}" for v in launcher) + " MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())

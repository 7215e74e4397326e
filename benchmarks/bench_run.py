#!/usr/bin/env python3
"""What running the app as an enclave costs: ``nitronb run`` against the bare app.

    python benchmarks/bench_run.py [--repeat N] [--backend process|container|all]

In a temporary workspace of its own (the local stack, the walk-through's steps up to the
approved APPCONFIG_ID), for each backend available (process always; container when an engine
answers), N times:
  run   from ``run_enclave`` (what ``nitronb run`` calls) to the encrypted result object being in
        the store: launch, measurement, attestation, provisioning, download, decryption, the
        app, encryption, upload, wipe;
  bare  ``python3 enclave_image/describe.py`` on the already decrypted input, as a subprocess.
Prints the medians, the overhead (run - bare) and the ratio (run / bare).
Targets: overhead <= 1.0 s on the process backend, <= 3 s on the container backend. The process
backend runs in its bubblewrap sandbox when bubblewrap is installed (the row says which);
``NITRONB_BWRAP=/nonexistent`` measures it unsandboxed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"process": 1.0, "container": 3.0}


def _setup(workspace: Path, backend: str):
    from nitronb.local import stack as local
    from nitronb.notebook import steps

    local.up(workspace)
    return steps.through_approval(workspace, backend=backend)


def _object_exists(uri: str, workspace: Path) -> bool:
    import botocore.exceptions

    from nitronb.s3 import client as storage

    bucket, key = storage.parse_s3_uri(uri)
    client = storage.client_for(workspace=workspace)
    try:
        client.head_object(Bucket=bucket, Key=key)
    except botocore.exceptions.ClientError as exc:
        if str(exc.response.get("Error", {}).get("Code")) in ("404", "NoSuchKey"):
            return False
        raise
    return True


def _time_run(wt) -> float:
    from nitronb.s3 import client as storage
    from nitronb.enclave.runner import run_enclave

    state = wt.state()
    storage.delete_object(state["output_uri"], workspace=wt.workspace)
    started = time.perf_counter()
    outcome = run_enclave(state["image_reference"], state["appconfig_id"],
                          backend=state["backend"], workspace=wt.workspace, timeout=600)
    if not outcome.ok:
        raise SystemExit(f"the enclave run failed (exit code {outcome.exit_code}):\n"
                         f"{outcome.log[-2000:]}")
    while not _object_exists(state["output_uri"], wt.workspace):
        if time.perf_counter() - started > 600:
            raise SystemExit("the run ended but its result never appeared in the store")
        time.sleep(0.01)
    return time.perf_counter() - started


def _time_bare(plain: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "enclave_image" / "describe.py"),
                           str(plain)], capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0 or "Viral sinusitis" not in done.stdout:
        raise SystemExit(f"describe.py failed on the decrypted input: {done.stderr[-2000:]}")
    return elapsed


def bench(backend: str, repeat: int) -> dict:
    from nitronb.local import stack as local
    from nitronb.crypto import decrypt_file
    from nitronb.keys import read_key_file

    workspace = Path(tempfile.mkdtemp(prefix=f"nitronb-bench-{backend}-"))
    try:
        wt = _setup(workspace, backend)
        state = wt.state()
        plain = workspace / "bare" / "conditions.csv"
        plain.parent.mkdir(mode=0o700)
        decrypt_file(read_key_file(state["input_key"]), state["encrypted_input"], plain)
        _time_run(wt)  # warm-up: first launch, page cache
        _time_bare(plain)
        runs, bares = [], []
        for _ in range(repeat):
            runs.append(_time_run(wt))
            bares.append(_time_bare(plain))
        return {"backend": backend, "run": statistics.median(runs),
                "bare": statistics.median(bares), "runs": runs, "bares": bares}
    finally:
        local.down(workspace)
        shutil.rmtree(workspace, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", "-n", type=int, default=5, metavar="N")
    parser.add_argument("--backend", choices=("process", "container", "all"), default="all")
    args = parser.parse_args(argv)
    from nitronb.enclave.engine import find_engine

    backends = ["process", "container"] if args.backend == "all" else [args.backend]
    if "container" in backends and find_engine(timeout=30) is None:
        print("container: skipped (no container engine answers; set DOCKER_HOST)",
              file=sys.stderr)
        backends.remove("container")
    os.environ.setdefault("NITRONB_WORKSPACE", tempfile.mkdtemp(prefix="nitronb-bench-home-"))
    from nitronb.enclave.sandbox import find_bwrap

    sandboxed = "process (bubblewrap)" if find_bwrap() else "process (unsandboxed)"
    print(f"{'backend':<22} {'run (s)':>8} {'bare (s)':>9} {'overhead':>9} {'ratio':>6} "
          f"{'target':>8}  verdict")
    for backend in backends:
        r = bench(backend, args.repeat)
        overhead = r["run"] - r["bare"]
        ok = overhead <= TARGETS[backend]
        label = sandboxed if backend == "process" else backend
        print(f"{label:<22} {r['run']:8.3f} {r['bare']:9.3f} {overhead:8.3f}s "
              f"{r['run'] / r['bare']:5.2f}x {TARGETS[backend]:7.1f}s  "
              f"{'ok' if ok else 'ABOVE TARGET'}   (median of {args.repeat}; runs "
              f"{', '.join(f'{x:.2f}' for x in r['runs'])})")
    return 0  # a measurement, not a test: the verdict column reports the targets


if __name__ == "__main__":
    sys.exit(main())

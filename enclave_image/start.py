"""The enclave app: fetch and decrypt the input datasets, run the analysis on them, then encrypt
the run result with each output dataset's key and upload it.

The datasets are the folders ``APP_CONFIG_DIR/input/*/dataset/`` and
``APP_CONFIG_DIR/output/*/dataset/`` the enclave OS writes, one per workflow node (see utils.py);
an input is decrypted to ``input/<node>`` in a private work folder, the path the analysis gets.

The run result is JSON ``{"returncode": int, "stdout": base64, "stderr": base64}``. If the inputs
cannot be fetched the analysis does not run, and the result that is uploaded says why. The exit
status is 0 only when the analysis succeeded and every upload did; plaintext is deleted at the end.

Environment: ``APP_CONFIG_DIR`` (the app-config folder), ``ANALYSIS_SCRIPT`` (default:
``describe.py`` beside this file), ``ANALYSIS_TIMEOUT`` (seconds, default none),
``APP_HTTP_ATTEMPTS`` and ``APP_HTTP_BACKOFF`` (retries of failed transfers).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import utils  # noqa: E402
from utils import AppError  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def log(message: str) -> None:
    print(f"start.py: {message}", file=sys.stderr, flush=True)


def fetch_inputs(datasets: list[utils.Dataset], work: str) -> list[str]:
    """Download and decrypt each input into ``work/input/<node>``; return the relative paths."""
    downloads = os.path.join(work, "download")
    plain = os.path.join(work, "input")
    os.makedirs(downloads, mode=0o700)
    os.makedirs(plain, mode=0o700)
    paths = []
    for dataset in datasets:
        what = f"input dataset {dataset.node!r}"
        encrypted = utils.safe_join(downloads, dataset.node)
        size = utils.download(dataset.url, encrypted, what=f"downloading the {what}",
                              report=lambda done, total, what=what: log(
                                  f"downloading the {what}: {done / 2**20:,.0f} MiB"
                                  + (f" of {total / 2**20:,.0f} MiB" if total else "")))
        log(f"downloaded the {what} from {dataset.location} ({size} bytes)")
        try:
            utils.decrypt_file(dataset.key, encrypted, utils.safe_join(plain, dataset.node))
        except AppError as exc:
            raise AppError(f"cannot decrypt the {what}: {exc}") from None
        finally:
            os.unlink(encrypted)
        paths.append(os.path.join("input", dataset.node))
    return paths


def run_analysis(files: list[str], work: str) -> dict:
    """Run the analysis script on ``files`` (relative to ``work``); return the run result."""
    script = os.environ.get("ANALYSIS_SCRIPT") or os.path.join(HERE, "describe.py")
    timeout = float(os.environ["ANALYSIS_TIMEOUT"]) if os.environ.get("ANALYSIS_TIMEOUT") else None
    log(f"running {os.path.basename(script)} on {len(files)} file(s)")
    try:
        done = subprocess.run([sys.executable, script, *files], cwd=work, capture_output=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return result(124, exc.stdout or b"", (exc.stderr or b"") +
                      f"\nthe analysis ran longer than {timeout:g} s and was stopped\n".encode())
    return result(done.returncode, done.stdout, done.stderr)


def result(returncode: int, stdout: bytes, stderr: bytes) -> dict:
    """The run result in its JSON shape."""
    return {"returncode": returncode,
            "stdout": base64.b64encode(stdout).decode("ascii"),
            "stderr": base64.b64encode(stderr).decode("ascii")}


def upload_result(run_result: dict, outputs: list[utils.Dataset], work: str) -> list[str]:
    """Encrypt the result for each output dataset and PUT it; return the failures."""
    plain = os.path.join(work, "result.json")
    with open(plain, "w", encoding="utf-8") as fh:
        json.dump(run_result, fh)
    failures = []
    for index, dataset in enumerate(outputs):
        what = f"output dataset {dataset.node!r}"
        encrypted = os.path.join(work, f"result-{index}.enc")
        try:
            utils.encrypt_file(dataset.key, plain, encrypted)
            utils.upload(dataset.url, encrypted, what=f"uploading the result to the {what}")
            log(f"uploaded the result to the {what} at {dataset.location}")
        except (AppError, OSError) as exc:
            failures.append(str(exc))
            log(f"error: {exc}")
    return failures


def main() -> int:
    config_dir = utils.app_config_dir()
    work = tempfile.mkdtemp(prefix="app-run-")
    try:
        try:
            outputs = utils.list_datasets("output", config_dir)
        except AppError as exc:
            log(f"error: {exc}")
            return 1
        if not outputs:
            log(f"error: no output dataset under {config_dir}/output: nowhere to send the result.")
            return 1
        failed = False
        try:
            inputs = utils.list_datasets("input", config_dir)
            if not inputs:
                raise AppError(f"no input dataset under {config_dir}/input.")
            files = fetch_inputs(inputs, work)
            run_result = run_analysis(files, work)
        except (AppError, OSError) as exc:
            log(f"error: {exc}")
            failed = True
            run_result = result(1, b"", f"start.py: {exc}\n".encode())
        else:
            if run_result["returncode"] != 0:
                log(f"error: the analysis exited with status {run_result['returncode']}")
                failed = True
        failures = upload_result(run_result, outputs, work)
        return 1 if failed or failures else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

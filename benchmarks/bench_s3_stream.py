#!/usr/bin/env python3
"""Throughput and peak memory of the local S3 endpoint's data path, against a bare server.

    python benchmarks/bench_s3_stream.py [SIZE_MB] [--keep]

Starts the real endpoint (``python -m nitronb.local.s3gate`` in a temporary workspace, from the
nitronb that ``PYTHONPATH`` names) and a bare streaming HTTP server (uvicorn, the same server the
endpoint runs on: PUT streams the body to a file and fsyncs it, as the endpoint does before it
answers; GET streams the file back), each in its own process. For a random file of SIZE_MB
(default 1024) it times, against the endpoint:

  upload_file     boto3's upload_file (multipart, in parallel)
  put_object      one PUT of the whole file (boto3)
  presigned PUT   a presigned PUT URL, the body streamed by requests
  head            HEAD of the object
  download_file   boto3's download_file (ranged GETs, in parallel)
  get ranged      a GET of a 100 MB range
  presigned GET   a presigned GET URL, the body streamed by requests

and PUT/GET of the same file against the bare server. Each operation's peak RSS of the serving
process is its VmHWM, reset before the operation (``/proc/PID/clear_refs``). Prints MB/s, peak
RSS, and the presigned PUT/GET throughput as a ratio of the bare server's. Benchmarks print;
they assert nothing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

MiB = 1 << 20

BARE_SERVER = textwrap.dedent("""
    import os, sys, uvicorn
    folder = sys.argv[1]

    async def app(scope, receive, send):
        path = os.path.join(folder, "object.bin")
        if scope["method"] == "PUT":
            fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            more = True
            while more:
                message = await receive()
                os.write(fd, message.get("body", b""))
                more = message.get("more_body", False)
            os.fsync(fd)
            os.close(fd)
            os.replace(path + ".tmp", path)
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if not os.path.exists(path):
            await send({"type": "http.response.start", "status": 404,
                        "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        size = os.path.getsize(path)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-length", str(size).encode())]})
        with open(path, "rb", buffering=0) as fh:
            while chunk := fh.read(256 * 1024):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                lifespan="off")
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(url: str, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}) before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status in (200, 404):
                    return
        except urllib.error.HTTPError as error:
            if error.code in (404, 405):
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


class Peak:
    """The peak RSS (VmHWM) of a process since the last :meth:`reset`, in MiB."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def reset(self) -> None:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5", encoding="utf-8")
        except OSError:
            pass  # not permitted here: the peak is then the peak since start

    def mib(self) -> float:
        for line in Path(f"/proc/{self.pid}/status").read_text(encoding="utf-8").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")


def _timed(label: str, peak: Peak, size: int, call, rows: list) -> float:
    peak.reset()
    start = time.perf_counter()
    call()
    seconds = time.perf_counter() - start
    rate = size / MiB / seconds if size else float("nan")
    rows.append((label, seconds, rate, peak.mib()))
    print(f"  {label:<24} {seconds:7.2f} s {rate:8.1f} MB/s   peak RSS {peak.mib():7.1f} MiB",
          flush=True)
    return rate


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(MiB):
            digest.update(chunk)
    return digest.hexdigest()


def _stream_get(url: str, target: Path) -> None:
    import requests

    with requests.get(url, stream=True, timeout=600) as answer, open(target, "wb") as out:
        answer.raise_for_status()
        for chunk in answer.iter_content(MiB):
            out.write(chunk)


def _stream_put(url: str, source: Path) -> None:
    import requests

    with open(source, "rb") as fh:
        requests.put(url, data=fh, timeout=600).raise_for_status()


def _endpoint(folder: Path, source: Path, size: int) -> dict[str, float]:
    import boto3
    from boto3.s3.transfer import TransferConfig
    from botocore.config import Config

    from nitronb.local.s3auth import load_credentials

    workspace = folder / "ws"
    port = _free_port()
    log = open(folder / "s3gate.log", "wb")
    process = subprocess.Popen([sys.executable, "-m", "nitronb.local.s3gate", "--workspace",
                                str(workspace), "--port", str(port)], stdout=log, stderr=log)
    rows: list = []
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(f"{url}/_nitronb/health", process)
        credentials = load_credentials(workspace)
        client = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                              aws_access_key_id=credentials["access_key_id"],
                              aws_secret_access_key=credentials["secret_access_key"],
                              config=Config(signature_version="s3v4",
                                            max_pool_connections=16))
        peak = Peak(process.pid)
        print(f"local S3 endpoint (pid {process.pid}), startup peak RSS {peak.mib():.1f} MiB")
        want = _sha256(source)
        out = folder / "out.bin"
        rates = {}
        rates["upload_file"] = _timed("upload_file", peak, size, lambda: client.upload_file(
            str(source), "nitronb", "big.bin", Config=TransferConfig()), rows)
        rates["download_file"] = _timed("download_file", peak, size, lambda: (
            client.download_file("nitronb", "big.bin", str(out))), rows)
        assert _sha256(out) == want, "download_file: bytes differ"

        def put_object() -> None:
            with open(source, "rb") as fh:
                client.put_object(Bucket="nitronb", Key="single.bin", Body=fh)
        rates["put_object"] = _timed("put_object (single PUT)", peak, size, put_object, rows)
        _timed("head", peak, 0, lambda: client.head_object(Bucket="nitronb", Key="single.bin"),
               rows)
        ranged = min(size, 100 * MiB)

        def get_range() -> None:
            body = client.get_object(Bucket="nitronb", Key="single.bin",
                                     Range=f"bytes={size - ranged}-")["Body"]
            while body.read(MiB):
                pass
        rates["get ranged"] = _timed(f"get ranged ({ranged // MiB} MB)", peak, ranged,
                                     get_range, rows)
        put_url = client.generate_presigned_url(
            "put_object", Params={"Bucket": "nitronb", "Key": "presigned.bin"}, ExpiresIn=3600)
        get_url = client.generate_presigned_url(
            "get_object", Params={"Bucket": "nitronb", "Key": "presigned.bin"}, ExpiresIn=3600)
        rates["presigned PUT"] = _timed("presigned PUT", peak, size,
                                        lambda: _stream_put(put_url, source), rows)
        rates["presigned GET"] = _timed("presigned GET", peak, size,
                                        lambda: _stream_get(get_url, out), rows)
        assert _sha256(out) == want, "presigned GET: bytes differ"
        print(f"  peak RSS of the endpoint over the whole run: "
              f"{max(r[3] for r in rows):.1f} MiB")
        return rates
    finally:
        process.terminate()
        process.wait(30)
        log.close()


def _bare(folder: Path, source: Path, size: int) -> dict[str, float]:
    port = _free_port()
    served = folder / "bare"
    served.mkdir()
    script = folder / "bare_server.py"
    script.write_text(BARE_SERVER, encoding="utf-8")
    process = subprocess.Popen([sys.executable, str(script), str(served), str(port)])
    rows: list = []
    try:
        url = f"http://127.0.0.1:{port}/object.bin"
        _wait(url, process)
        peak = Peak(process.pid)
        print(f"bare streaming server (uvicorn, pid {process.pid})")
        out = folder / "bare-out.bin"
        rates = {"PUT": _timed("PUT", peak, size, lambda: _stream_put(url, source), rows),
                 "GET": _timed("GET", peak, size, lambda: _stream_get(url, out), rows)}
        return rates
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("size_mb", nargs="?", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    size = args.size_mb * MiB
    folder = Path(tempfile.mkdtemp(prefix="bench-s3-stream-"))
    try:
        source = folder / "source.bin"
        with open(source, "wb") as fh:
            for _ in range(args.size_mb):
                fh.write(os.urandom(MiB))
        import nitronb

        print(f"{args.size_mb} MB file; nitronb from {Path(nitronb.__file__).parent}")
        ours = _endpoint(folder, source, size)
        bare = _bare(folder, source, size)
        print("ratios against the bare server (presigned, plain HTTP, same client):")
        print(f"  PUT {ours['presigned PUT'] / bare['PUT']:.2f}x   "
              f"GET {ours['presigned GET'] / bare['GET']:.2f}x")
        print(f"  upload_file {ours['upload_file'] / bare['PUT']:.2f}x   "
              f"download_file {ours['download_file'] / bare['GET']:.2f}x")
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()

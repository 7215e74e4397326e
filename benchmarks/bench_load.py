#!/usr/bin/env python3
"""Load on the local stack: 50 concurrent clients against the manager, the node agent and S3.

    python benchmarks/bench_load.py [--clients 50] [--duration 10] [--idle 8]

In a temporary workspace, with the local stack started by ``nitronb.local.stack.up``, each scenario
runs ``--clients`` threads (one HTTP session each) for ``--duration`` seconds:
  reads     GET /v1/datasets, /v1/apps, /v1/tasks, /v1/sys/auth in turn, with a token;
  writes    as app-owner create an app, then as admin approve its whitelisting task (two
            writes per round: the approvals never run out);
  s3-get    GET a 1 KiB object through its presigned URL (requests, as an enclave fetches).
For each: requests per second, p50 and p99 latency (ms), errors (no answer or an unexpected
status). Then:
  idle      --conns connections to each service that send nothing, and as many that send one
            request and then stay silent; after --idle seconds, how many each service closed;
  accept    for 4 s, 20 threads open connections (1 s connect timeout, at most 4000) to the
            manager and the node agent and keep them open: how many were accepted;
  nesting   a body of 100,000 '[' to the manager and the node agent: status, body, and whether
            the service's log gained a traceback;
  reset     20 requests whose client resets the connection before the answer: tracebacks
            written to each service's log.
Measures; asserts nothing. The clients share the machine with the servers.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import resource
import socket
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


def _scenario(name: str, clients: int, duration: float, setup, step) -> dict:
    """Run ``step(session, state, i)`` -> list of (seconds, ok) in ``clients`` threads."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = [0.0]
    barrier = threading.Barrier(clients + 1)

    def worker(i: int) -> None:
        session = requests.Session()
        state = setup(i)
        barrier.wait()
        mine, bad = [], 0
        while time.monotonic() < stop_at[0]:
            for seconds, ok in step(session, state, i):
                mine.append(seconds)
                bad += 0 if ok else 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + duration + 3600  # set for real once everyone is ready
    barrier.wait()
    start = time.monotonic()
    stop_at[0] = start + duration
    for t in threads:
        t.join()
    elapsed = time.monotonic() - start
    total = len(latencies) + 0
    return {"scenario": name, "requests": total, "rps": total / elapsed,
            "p50_ms": 1000 * _percentile(latencies, 0.5),
            "p99_ms": 1000 * _percentile(latencies, 0.99), "errors": errors[0]}


def _timed(session: requests.Session, method: str, url: str, expect: tuple[int, ...],
           **kwargs) -> tuple[float, bool, requests.Response | None]:
    started = time.perf_counter()
    try:
        response = session.request(method, url, timeout=30, **kwargs)
        response.content
    except requests.RequestException:
        return time.perf_counter() - started, False, None
    return time.perf_counter() - started, response.status_code in expect, response


def _hostport(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def _idle_check(urls: dict[str, str], conns: int, idle: float) -> dict[str, dict[str, int]]:
    held: dict[str, dict[str, list[socket.socket]]] = {}
    for name, url in urls.items():
        host, port = _hostport(url)
        silent, used = [], []
        for _ in range(conns):
            silent.append(socket.create_connection((host, port), timeout=5))
            sock = socket.create_connection((host, port), timeout=5)
            path = "/_nitronb/health" if name == "s3" else (
                "/health" if name == "node-agent" else "/v1/sys/health")
            sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
            response = http.client.HTTPResponse(sock)
            response.begin()
            response.read()  # the whole answer: what is left to read is only the close
            used.append(sock)
        held[name] = {"silent": silent, "after-one-request": used}
    time.sleep(idle)
    out: dict[str, dict[str, int]] = {}
    for name, kinds in held.items():
        out[name] = {}
        for kind, socks in kinds.items():
            closed = 0
            for sock in socks:
                sock.settimeout(0.05)
                try:
                    closed += sock.recv(1) == b""
                except socket.timeout:
                    pass
                except OSError:
                    closed += 1
                sock.close()
            out[name][kind] = closed
    return out


CAP = 4000  #: connections held at most by the accept check


def _accept_check(url: str, seconds: float = 4.0, threads: int = 20) -> dict[str, int]:
    host, port = _hostport(url)
    held: list[socket.socket] = []
    failed = [0]
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def opener() -> None:
        while time.monotonic() < deadline and len(held) < CAP:
            try:
                sock = socket.create_connection((host, port), timeout=1.0)
            except OSError:
                with lock:
                    failed[0] += 1
                continue
            with lock:
                held.append(sock)

    workers = [threading.Thread(target=opener) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    accepted = len(held)
    for sock in held:
        sock.close()
    time.sleep(1.0)  # let the server notice before the next check
    return {"accepted": accepted, "failed": failed[0]}


def _tracebacks(log: Path) -> int:
    try:
        text = log.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return 0
    return text.count("Traceback")


def _nesting(url: str, path: str, headers: dict[str, str], log: Path) -> dict:
    before = _tracebacks(log)
    try:
        response = requests.post(url + path, data=b"[" * 100_000, timeout=30,
                                 headers={**headers, "Content-Type": "application/json"})
        status, body = response.status_code, response.text[:120]
    except requests.RequestException as exc:
        status, body = None, f"no answer: {type(exc).__name__}"
    time.sleep(0.5)
    return {"status": status, "body": body, "new_tracebacks": _tracebacks(log) - before}


def _reset(url: str, path: str, headers: dict[str, str], log: Path, n: int = 20) -> dict:
    host, port = _hostport(url)
    before = _tracebacks(log)
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    for _ in range(n):
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{head}\r\n".encode())
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()  # RST before the answer is read
    time.sleep(1.0)
    return {"resets": n, "new_tracebacks": _tracebacks(log) - before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per scenario")
    parser.add_argument("--conns", type=int, default=50, help="idle connections per kind")
    parser.add_argument("--idle", type=float, default=8.0, help="seconds to leave them idle")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    print("load average at the start: %.2f %.2f %.2f" % os.getloadavg(), flush=True)
    from nitronb.local import stack as local
    from nitronb.ccm import CCMClient
    from nitronb.s3.client import client_for

    with tempfile.TemporaryDirectory(prefix="nitronb-load-") as tmp:
        ws = Path(tmp) / "ws"
        os.environ["NITRONB_WORKSPACE"] = str(ws)
        stack = local.up(ws)
        try:
            urls = {name: entry["url"] for name, entry in stack.items()}
            logs = {name: Path(entry["log"]) for name, entry in stack.items()}
            manager = urls["manager"]
            tokens = json.loads((ws / "ccm" / "tokens.json").read_text(encoding="utf-8"))
            auth = {p: {"Authorization": f"Bearer {t}"} for p, t in tokens.items()}
            owner = CCMClient(manager, tokens["app-owner"])
            for i in range(5):
                owner.create_app({"name": f"seed-{i}", "image": "seed", "domain": "seed.local"})
            s3 = client_for("local", workspace=ws)
            s3.put_object(Bucket="nitronb", Key="load/small.bin", Body=os.urandom(1024))
            presigned = s3.generate_presigned_url(
                "get_object", Params={"Bucket": "nitronb", "Key": "load/small.bin"},
                ExpiresIn=3600)
            paths = ["/v1/datasets", "/v1/apps", "/v1/tasks", "/v1/sys/auth"]

            def reads(session, state, i):
                state["n"] += 1
                seconds, ok, _ = _timed(session, "GET", manager + paths[state["n"] % 4],
                                        (200,), headers=auth["data-owner"])
                return [(seconds, ok)]

            def writes(session, state, i):
                state["n"] += 1
                name = f"load-{i}-{state['n']}"
                s1, ok1, made = _timed(session, "POST", manager + "/v1/apps", (201,),
                                       headers=auth["app-owner"],
                                       json={"name": name, "image": "load",
                                             "domain": "load.local"})
                if not ok1 or made is None:
                    return [(s1, False)]
                task = made.json()["domain_task_id"]
                s2, ok2, _ = _timed(session, "POST", f"{manager}/v1/tasks/{task}/approve",
                                    (200,), headers=auth["admin"], json={})
                return [(s1, ok1), (s2, ok2)]

            def s3_gets(session, state, i):
                seconds, ok, _ = _timed(session, "GET", presigned, (200,))
                return [(seconds, ok)]

            results = []
            for name, step in (("reads", reads), ("writes", writes), ("s3-get", s3_gets)):
                results.append(_scenario(name, args.clients, args.duration,
                                         lambda i: {"n": 0}, step))
                print(json.dumps(results[-1]), flush=True)

            print(f"\n{args.clients} clients, {args.duration:g} s per scenario")
            print(f"{'scenario':<10}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
                  f"{'errors':>8}")
            for r in results:
                print(f"{r['scenario']:<10}{r['requests']:>10}{r['rps']:>9.1f}"
                      f"{r['p50_ms']:>9.1f}{r['p99_ms']:>9.1f}{r['errors']:>8}")

            idle = _idle_check(urls, args.conns, args.idle)
            print(f"\nidle: of {args.conns} connections each, closed by the server after "
                  f"{args.idle:g} s")
            for name, counts in idle.items():
                print(f"  {name:<11} silent {counts['silent']:>4}/{args.conns}   "
                      f"after one request {counts['after-one-request']:>4}/{args.conns}")

            print(f"\naccept: connections accepted in 4 s (20 threads, 1 s connect timeout, "
                  f"stops at {CAP})")
            for name in ("manager", "node-agent"):
                got = _accept_check(urls[name])
                print(f"  {name:<11} accepted {got['accepted']:>5}   failed {got['failed']:>5}")

            print("\nnesting: a body of 100,000 '['")
            operator = {"Authorization": "Bearer " + (ws / "node-agent" / "operator.token")
                        .read_text(encoding="utf-8").strip()}
            for name, path, headers in (("manager", "/v1/datasets", auth["data-owner"]),
                                        ("node-agent", "/v1/enclaves", operator)):
                got = _nesting(urls[name], path, headers, logs[name])
                print(f"  {name:<11} status {got['status']}  new tracebacks "
                      f"{got['new_tracebacks']}  body {got['body']!r}")

            print("\nreset: clients that reset the connection before the answer")
            for name, path, headers in (("manager", "/v1/audit", auth["admin"]),
                                        ("node-agent", "/v1/enclaves", operator),
                                        ("s3", urlsplit(presigned).path + "?" +
                                         urlsplit(presigned).query, {})):
                got = _reset(urls[name], path, headers, logs[name])
                print(f"  {name:<11} {got['resets']} resets, new tracebacks in its log "
                      f"{got['new_tracebacks']}")
        finally:
            local.down(ws)
    print("\nload average at the end: %.2f %.2f %.2f" % os.getloadavg())
    return 0


if __name__ == "__main__":
    sys.exit(main())

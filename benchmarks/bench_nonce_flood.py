"""An anonymous flood of the manager's unauthenticated routes: nonces and refused provisions.

Starts a manager in a temporary workspace with one approved workflow, then for DURATION seconds
CLIENTS threads each take a nonce and post a provision whose attestation document is garbage.
Prints the requests answered by status and the rows the database holds afterwards (nonces,
audit rows, refusal counters), which must stay bounded whatever the duration.

Run: ``python benchmarks/bench_nonce_flood.py [DURATION] [CLIENTS]``.
"""

from __future__ import annotations

import base64
import collections
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ccm"))

import requests  # noqa: E402

from ccm_flow import approve_all, build_world  # noqa: E402
from conftest import ManagerProcess  # noqa: E402


def _rows(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as conn:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("nonces", "audit", "provision_refusals") if table in tables}


def flood(duration: float = 10.0, clients: int = 8) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        manager = ManagerProcess(Path(tmp) / "ws")
        manager.workspace.mkdir()
        manager.start()
        try:
            config_id = approve_all(build_world(manager))["app_config_ids"]["app"]
            db = manager.workspace / "ccm" / "ccm.sqlite3"
            before = _rows(db)
            statuses: collections.Counter[str] = collections.Counter()
            lock = threading.Lock()
            deadline = time.monotonic() + duration

            def worker() -> None:
                session = requests.Session()
                while time.monotonic() < deadline:
                    reply = session.post(f"{manager.url}/v1/runtime/nonces", json={}, timeout=30)
                    nonce = reply.json().get("nonce") if reply.status_code == 201 else \
                        base64.b64encode(b"n" * 32).decode()
                    refused = session.post(
                        f"{manager.url}/v1/runtime/app_configs/{config_id}/provision",
                        json={"attestation_document": base64.b64encode(b"garbage").decode(),
                              "nonce": nonce}, timeout=30)
                    with lock:
                        statuses[f"nonce {reply.status_code}"] += 1
                        statuses[f"provision {refused.status_code}"] += 1

            threads = [threading.Thread(target=worker) for _ in range(clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            after = _rows(db)
        finally:
            manager.stop()
    print(f"{duration:g} s, {clients} clients: " + ", ".join(
        f"{key}: {count}" for key, count in sorted(statuses.items())))
    print("rows before: " + ", ".join(f"{k} {v}" for k, v in before.items()))
    print("rows after:  " + ", ".join(f"{k} {v}" for k, v in after.items()))


if __name__ == "__main__":
    flood(*(float(a) if i == 0 else int(a) for i, a in enumerate(sys.argv[1:3])))

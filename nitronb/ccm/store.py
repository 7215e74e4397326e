"""The manager's SQLite store: WAL journal, one table per kind, schema upgraded by version.

Records are kept as JSON text exactly as written, so key order survives a round trip (the
APPCONFIG_ID depends on it). Every write happens inside :meth:`Store.transaction`, which takes
SQLite's write lock up front (``BEGIN IMMEDIATE``) so that concurrent clients serialize cleanly.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

from nitronb.ccm.models import KINDS, Record
from nitronb.errors import StorageError

_TABLES = {
    "user": "users", "dataset": "datasets", "app": "apps", "build": "builds", "task": "tasks",
    "app_config": "app_configs", "workflow": "workflows", "final_workflow": "final_workflows",
    "approval_request": "approval_requests",
}

# Each entry upgrades the schema from version i to i + 1; never edit a released entry.
_MIGRATIONS: list[list[str]] = [
    [
        *(f"CREATE TABLE {t} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT, "
          f"created_at TEXT NOT NULL, body TEXT NOT NULL)" for t in _TABLES.values()),
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL)",
        "CREATE TABLE dataset_secrets (dataset_id TEXT PRIMARY KEY, sealed BLOB NOT NULL)",
        "CREATE TABLE runtime_configs (id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, "
        "app_config_id TEXT NOT NULL, config TEXT NOT NULL, extra TEXT NOT NULL, "
        "created_at TEXT NOT NULL)",
        "CREATE TABLE nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL, "
        "used_at REAL)",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, "
        "action TEXT NOT NULL, object_type TEXT NOT NULL, object_id TEXT NOT NULL, "
        "details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    [  # nonces per client, for the limits on unauthenticated requests; refusals counted
        "ALTER TABLE nonces ADD COLUMN client TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nonces ADD COLUMN issued_at REAL NOT NULL DEFAULT 0",
        "CREATE INDEX nonces_by_client ON nonces (client, issued_at)",
        "CREATE INDEX nonces_by_expiry ON nonces (expires_at)",
        "CREATE TABLE provision_refusals (config_id TEXT NOT NULL, minute TEXT NOT NULL, "
        "count INTEGER NOT NULL, last_reason TEXT NOT NULL, PRIMARY KEY (config_id, minute))",
    ],
]
SCHEMA_VERSION = len(_MIGRATIONS)


class Store:
    """Typed access to the manager's tables; one connection shared under a lock."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            if not self.path.exists():  # private from birth; SQLite gives -wal/-shm the same mode
                os.close(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            for part in ("", "-wal", "-shm"):
                if Path(f"{self.path}{part}").exists():
                    os.chmod(f"{self.path}{part}", 0o600)
            self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
        except (sqlite3.Error, OSError) as exc:
            raise StorageError(f"cannot open the manager's database {self.path}: {exc}.",
                               hint="Check that the workspace folder is writable.") from None
        self._lock = threading.RLock()
        self._depth = 0
        self._migrate()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _migrate(self) -> None:
        with self.transaction():
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"the database {self.path} has schema version {version}, newer than this "
                    f"nitronb ({SCHEMA_VERSION}).", hint="Upgrade nitronb.")
            for step in _MIGRATIONS[version:]:
                for statement in step:
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (nested calls join the outer one); rolled back on any error."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._db
                finally:
                    self._depth -= 1
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                self._db.execute("COMMIT")
            finally:
                self._depth = 0

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row | tuple]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    # --- records ------------------------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Insert or replace ``record``."""
        table = _TABLES[record.kind]
        body = json.dumps(record.to_dict(), ensure_ascii=False)
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO {table} (id, owner, name, created_at, body) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (record.id, record.owner, getattr(record, "name", None),
                        record.created_at, body))

    def get(self, kind: str, record_id: str) -> Record | None:
        rows = self.execute(f"SELECT body FROM {_TABLES[kind]} WHERE id = ?", (record_id,))
        return KINDS[kind].from_dict(json.loads(rows[0][0])) if rows else None

    def find(self, kind: str, *, name: str | None = None,
             owner: str | None = None) -> list[Record]:
        """Records of ``kind``, oldest first, optionally filtered by name and owner."""
        sql, params = f"SELECT body FROM {_TABLES[kind]} WHERE 1=1", []
        if name is not None:
            sql += " AND name = ?"
            params.append(name)
        if owner is not None:
            sql += " AND owner = ?"
            params.append(owner)
        rows = self.execute(sql + " ORDER BY created_at, rowid", tuple(params))
        return [KINDS[kind].from_dict(json.loads(row[0])) for row in rows]

    # --- tokens, secrets, runtime configs, nonces, meta ----------------------------------------

    def set_token(self, token_hash: str, user_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM tokens WHERE user_id = ?", (user_id,))
            db.execute("INSERT INTO tokens VALUES (?, ?)", (token_hash, user_id))

    def user_for_token(self, token_hash: str) -> str | None:
        rows = self.execute("SELECT user_id FROM tokens WHERE token_hash = ?", (token_hash,))
        return rows[0][0] if rows else None

    def put_secret(self, dataset_id: str, sealed: bytes) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO dataset_secrets VALUES (?, ?)", (dataset_id, sealed))

    def get_secret(self, dataset_id: str) -> bytes | None:
        rows = self.execute("SELECT sealed FROM dataset_secrets WHERE dataset_id = ?",
                            (dataset_id,))
        return bytes(rows[0][0]) if rows else None

    def put_runtime_config(self, config_id: str, workflow_id: str, app_config_id: str,
                           config_text: str, extra_text: str, created_at: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO runtime_configs VALUES (?, ?, ?, ?, ?, ?)",
                       (config_id, workflow_id, app_config_id, config_text, extra_text,
                        created_at))

    def get_runtime_config(self, config_id: str) -> tuple[str, str, str, str] | None:
        """``(workflow_id, app_config_id, config JSON text, extra JSON text)``."""
        rows = self.execute("SELECT workflow_id, app_config_id, config, extra FROM "
                            "runtime_configs WHERE id = ?", (config_id,))
        return tuple(rows[0]) if rows else None

    def runtime_config_ids(self) -> list[tuple[str, str]]:
        """``(config id, workflow id)`` of every runtime configuration, oldest first."""
        return [tuple(r) for r in self.execute(
            "SELECT id, workflow_id FROM runtime_configs ORDER BY created_at, rowid")]

    def add_nonce(self, nonce: str, expires_at: float) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO nonces (nonce, expires_at, used_at) VALUES (?, ?, NULL)",
                       (nonce, expires_at))

    def issue_nonce(self, nonce: str, *, client: str, now: float, ttl: float,
                    outstanding: int, per_window: int, window: float, total: int) -> str:
        """Drop expired nonces, then store ``nonce`` for ``client`` (expiring ``ttl`` seconds
        after ``now``) unless one limit is reached; return "ok", or the limit that refused it:
        "outstanding" (``client`` holds that many unused ones), "rate" (``client`` took
        ``per_window`` in the last ``window`` seconds) or "total" (that many unused in all)."""
        with self.transaction() as db:
            db.execute("DELETE FROM nonces WHERE expires_at < ?", (now,))
            unused, recent = db.execute(
                "SELECT COALESCE(SUM(used_at IS NULL), 0), COALESCE(SUM(issued_at > ?), 0) "
                "FROM nonces WHERE client = ?", (now - window, client)).fetchone()
            if unused >= outstanding:
                return "outstanding"
            if recent >= per_window:
                return "rate"
            if db.execute("SELECT COUNT(*) FROM nonces WHERE used_at IS NULL").fetchone()[0] \
                    >= total:
                return "total"
            db.execute("INSERT INTO nonces (nonce, expires_at, used_at, client, issued_at) "
                       "VALUES (?, ?, NULL, ?, ?)", (nonce, now + ttl, client, now))
            return "ok"

    def count_refusal(self, config_id: str, minute: str, reason: str, *,
                      keep_after: str) -> int:
        """Count one refused provision of ``config_id`` in ``minute`` (an ISO 8601 prefix);
        return how many that minute has now. Minutes before ``keep_after`` are dropped."""
        with self.transaction() as db:
            db.execute("DELETE FROM provision_refusals WHERE minute < ?", (keep_after,))
            db.execute("INSERT INTO provision_refusals VALUES (?, ?, 1, ?) "
                       "ON CONFLICT (config_id, minute) DO UPDATE SET count = count + 1, "
                       "last_reason = excluded.last_reason", (config_id, minute, reason))
            return db.execute("SELECT count FROM provision_refusals WHERE config_id = ? AND "
                              "minute = ?", (config_id, minute)).fetchone()[0]

    def consume_nonce(self, nonce: str, now: float) -> str:
        """Mark ``nonce`` used; return "ok", "unknown", "used" or "expired"."""
        with self.transaction() as db:
            rows = db.execute("SELECT expires_at, used_at FROM nonces WHERE nonce = ?",
                              (nonce,)).fetchall()
            if not rows:
                return "unknown"
            expires_at, used_at = rows[0]
            if used_at is not None:
                return "used"
            db.execute("UPDATE nonces SET used_at = ? WHERE nonce = ?", (now, nonce))
            if expires_at < now:
                return "expired"
            db.execute("DELETE FROM nonces WHERE expires_at < ? AND used_at IS NULL",
                       (now - 3600,))
            return "ok"

    def get_meta(self, key: str) -> str | None:
        rows = self.execute("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

"""The store on SQLite and PostgreSQL: records keep their JSON text, the schema is upgraded once,
SQLite databases written before alembic are adopted with nothing lost, writers serialize."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import threading

import pytest

from nitronb.ccm import audit
from nitronb.ccm.models import AppConfig, User
from nitronb.ccm.store import Store
from nitronb.errors import ManagerDatabaseError

# The schema as nitronb wrote it itself, numbered by PRAGMA user_version (1, then 2).
_OLD_RECORD_TABLES = ("users", "datasets", "apps", "builds", "tasks", "app_configs", "workflows",
                      "final_workflows", "approval_requests")
_OLD_SCHEMA = [
    [
        *(f"CREATE TABLE {t} (id TEXT PRIMARY KEY, owner TEXT NOT NULL, name TEXT, "
          f"created_at TEXT NOT NULL, body TEXT NOT NULL)" for t in _OLD_RECORD_TABLES),
        "CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, user_id TEXT NOT NULL)",
        "CREATE TABLE dataset_secrets (dataset_id TEXT PRIMARY KEY, sealed BLOB NOT NULL)",
        "CREATE TABLE runtime_configs (id TEXT PRIMARY KEY, workflow_id TEXT NOT NULL, "
        "app_config_id TEXT NOT NULL, config TEXT NOT NULL, extra TEXT NOT NULL, "
        "created_at TEXT NOT NULL)",
        "CREATE TABLE nonces (nonce TEXT PRIMARY KEY, expires_at REAL NOT NULL, used_at REAL)",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, "
        "action TEXT NOT NULL, object_type TEXT NOT NULL, object_id TEXT NOT NULL, "
        "details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)",
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    ],
    [
        "ALTER TABLE nonces ADD COLUMN client TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE nonces ADD COLUMN issued_at REAL NOT NULL DEFAULT 0",
        "CREATE INDEX nonces_by_client ON nonces (client, issued_at)",
        "CREATE INDEX nonces_by_expiry ON nonces (expires_at)",
        "CREATE TABLE provision_refusals (config_id TEXT NOT NULL, minute TEXT NOT NULL, "
        "count INTEGER NOT NULL, last_reason TEXT NOT NULL, PRIMARY KEY (config_id, minute))",
    ],
]
# a body whose keys are not in sorted order: its text must come back byte for byte
_BODY = ('{"id": "c1", "owner": "app-owner", "created_at": "2026-01-01T00:00:00Z", '
         '"name": "zeta", "description": "\u00e9t\u00e9", "image": "img", '
         '"config_items": {"b": "2", "a": "1"}}')


def _old_database(path, version: int) -> None:
    """A database as nitronb wrote it at schema ``version``, with a row of every kind."""
    db = sqlite3.connect(path, isolation_level=None)
    for step in _OLD_SCHEMA[:version]:
        for statement in step:
            db.execute(statement)
    db.execute(f"PRAGMA user_version={version}")
    users = [("u2", "same second, written first"), ("u1", "same second, written last")]
    for user_id, name in users:
        body = json.dumps({"id": user_id, "owner": "admin", "created_at": "2026-01-01T00:00:00Z",
                           "name": name, "roles": ["user"]})
        db.execute("INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?)",
                   (user_id, "admin", name, "2026-01-01T00:00:00Z", body))
    db.execute("INSERT INTO app_configs VALUES ('c1', 'app-owner', 'zeta', "
               "'2026-01-01T00:00:00Z', ?)", (_BODY,))
    db.execute("INSERT INTO tokens VALUES ('hash1', 'u1')")
    db.execute("INSERT INTO dataset_secrets VALUES ('d1', ?)", (b"\x00sealed\xff",))
    db.execute("INSERT INTO runtime_configs VALUES ('r1', 'w1', 'c1', '{\"b\":1,\"a\":2}', "
               "'{}', '2026-01-01T00:00:00Z')")
    db.execute("INSERT INTO nonces (nonce, expires_at, used_at) VALUES ('n1', 1e12, NULL)")
    prev = audit.GENESIS
    for row_id in (1, 2):
        row = audit._canonical(row_id, "2026-01-01T00:00:00Z", "system", "user.create", "user",
                               f"u{row_id}", {"roles": ["user"]})
        digest = audit._row_hash(prev, row)
        db.execute("INSERT INTO audit VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                   (row_id, row["at"], row["actor"], row["action"], row["object_type"],
                    row["object_id"], json.dumps(row["details"]), prev, digest))
        prev = digest
    db.execute("INSERT INTO meta VALUES ('audit_head', ?)", (f"2:{prev}",))
    db.close()


@pytest.mark.parametrize("version", [1, 2])
def test_a_database_from_before_alembic_is_adopted_with_nothing_lost(tmp_path, version):
    path = tmp_path / "ccm.sqlite3"
    _old_database(path, version)
    store = Store(path)
    assert [u.name for u in store.find("user")] == ["same second, written first",
                                                   "same second, written last"]
    assert store.execute("SELECT body FROM app_configs")[0][0] == _BODY
    assert store.get("app_config", "c1").config_items == {"b": "2", "a": "1"}
    assert store.user_for_token("hash1") == "u1"
    assert store.get_secret("d1") == b"\x00sealed\xff"
    assert store.get_runtime_config("r1") == ("w1", "c1", '{"b":1,"a":2}', "{}")
    assert store.consume_nonce("n1", 1000.0) == "ok"
    assert audit.verify(store) == {"ok": True, "rows": 2, "head": audit.entries(store)[-1]["hash"]}
    assert store.count_refusal("c1", "2026-01-01T00:00", "r", keep_after="2026") == 1
    store.close()
    with sqlite3.connect(path) as db:  # the code that numbered versions itself refuses it
        assert db.execute("PRAGMA user_version").fetchone()[0] > 2
    Store(path).close()  # opened again: nothing to upgrade


def test_a_database_newer_than_this_nitronb_is_refused(store_url):
    Store(store_url).execute("UPDATE alembic_version SET version_num = '9999'")
    with pytest.raises(ManagerDatabaseError, match="newer than this nitronb") as caught:
        Store(store_url)
    assert caught.value.hint == "Upgrade nitronb."


def test_records_keep_their_json_text_and_order(store_url):
    store = Store(store_url)
    config = AppConfig(id="c1", owner="app-owner", created_at="2026-01-01T00:00:00Z",
                       name="zeta", config_items={"z": "1", "a": "2"})
    store.put(config)
    text = json.dumps(config.to_dict(), ensure_ascii=False)
    assert store.execute("SELECT body FROM app_configs")[0][0] == text
    assert list(store.get("app_config", "c1").config_items) == ["z", "a"]
    for user_id in ("b", "a", "c"):  # one second: the order they were written in
        store.put(User(id=user_id, owner="admin", created_at="2026-01-01T00:00:00Z",
                       name=user_id))
    store.put(User(id="b", owner="admin", created_at="2026-01-01T00:00:00Z", name="b"))
    assert [u.id for u in store.find("user")] == ["a", "c", "b"]
    assert [u.id for u in store.find("user", name="c")] == ["c"]
    store.close()


def test_a_failed_transaction_leaves_nothing(store_url):
    store = Store(store_url)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.set_meta("k", "v")
            audit.append(store, at="t", actor="a", action="x", object_type="", object_id="")
            raise RuntimeError("stop")
    assert store.get_meta("k") is None and audit.entries(store) == []
    store.close()


def test_reads_see_the_last_commit_and_never_an_open_transaction(store_url):
    store, other = Store(store_url), Store(store_url)
    assert store.get_meta("k") is None
    other.set_meta("k", "1")
    assert store.get_meta("k") == "1"
    with store.transaction():
        store.set_meta("k", "2")
        assert store.get_meta("k") == "2"  # the transaction's own thread joins it
        seen: list[str | None] = []
        reader = threading.Thread(target=lambda: seen.append(store.get_meta("k")))
        reader.start()
        reader.join(30)
        assert seen == ["1"]  # another thread reads the last commit, without waiting
    assert store.get_meta("k") == "2" and other.get_meta("k") == "2"
    store.close()
    other.close()


def _append_rows(url: str, count: int, actor: str) -> None:
    store = Store(url)
    for i in range(count):
        with store.transaction():
            audit.append(store, at="2026-01-01T00:00:00Z", actor=actor, action="test",
                         object_type="", object_id=str(i))
    store.close()


def test_processes_writing_at_once_keep_one_audit_chain(store_url):
    """Four processes open the same (new) database at once and append 25 rows each."""
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_append_rows, args=(store_url, 25, f"p{i}"))
               for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
        assert worker.exitcode == 0
    store = Store(store_url)
    result = audit.verify(store)
    assert result["ok"] and result["rows"] == 100
    assert store.execute("SELECT version_num FROM alembic_version")[0][0] == "0003"
    store.close()


@pytest.mark.parametrize("url, shown", [
    ("postgresql://nitronb:s3cr3t-pw@127.0.0.1:1/nitronb",
     "postgresql://nitronb:***@127.0.0.1:1/nitronb"),
    # libpq also takes the password as a query parameter
    ("postgresql://nitronb@127.0.0.1:1/nitronb?password=s3cr3t-pw",
     "postgresql://nitronb@127.0.0.1:1/nitronb?password=***"),
    # the form many hosting providers hand out
    ("postgres://nitronb:s3cr3t-pw@127.0.0.1:1/nitronb",
     "postgresql://nitronb:***@127.0.0.1:1/nitronb"),
])
def test_the_password_of_a_database_url_is_never_shown(url, shown):
    with pytest.raises(ManagerDatabaseError) as caught:
        Store(url)
    assert "s3cr3t-pw" not in str(caught.value) and "***" in str(caught.value)
    assert caught.value.url == shown
    assert "must be SQLite or PostgreSQL" not in str(caught.value)  # postgres:// is PostgreSQL


def test_the_sqlite_file_is_private_and_journals_in_wal(tmp_path):
    import os
    import stat

    path = tmp_path / "ccm.sqlite3"
    store = Store(path)
    store.set_meta("k", "v")
    for part in ("", "-wal", "-shm"):
        if os.path.exists(f"{path}{part}"):
            assert stat.S_IMODE(os.stat(f"{path}{part}").st_mode) == 0o600, part
    assert store.execute("PRAGMA journal_mode")[0][0] == "wal"
    store.close()

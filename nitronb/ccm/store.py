"""The manager's store: typed access to its tables on SQLite or PostgreSQL (SQLAlchemy Core).

Records are kept as JSON text exactly as written, so key order survives a round trip (the
APPCONFIG_ID depends on it). Every write happens inside :meth:`Store.transaction`, which takes
the database's write lock up front (:func:`nitronb.ccm.database.begin_write`), so that writers
in every thread, process and host serialize; reads outside a transaction see the last commit.
Opening a store brings its schema up to date (:func:`nitronb.ccm.database.upgrade`).
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any, Iterator, Mapping

from sqlalchemy import bindparam, case, delete, func, select, text, update
from sqlalchemy.engine import Connection, Row
from sqlalchemy.exc import SQLAlchemyError

from nitronb.ccm import database, schema
from nitronb.ccm.models import KINDS, Record
from nitronb.errors import ManagerDatabaseError

_TABLES = schema.TABLES
_UPDATED = ("owner", "name", "created_at", "body", "seq")


class Store:
    """The manager's tables in the database at ``url`` (a SQLAlchemy URL, or the path of a
    SQLite file); thread-safe. ``path`` is the SQLite file (None on PostgreSQL) and
    ``location`` the URL with its password hidden. Raises :class:`ManagerDatabaseError` when
    the database cannot be opened or is newer than this nitronb."""

    def __init__(self, url: str | Path) -> None:
        if isinstance(url, Path) or "://" not in str(url):
            url = f"sqlite:///{Path(url).resolve()}"
        self.url = str(url)
        self.location = database.redact(self.url)
        self.path = database.sqlite_path(self.url)
        self._local = threading.local()
        self._writer = threading.Lock()  # one writer per process; the database's lock for more
        self._statements: dict[tuple[str, ...], Any] = {}  # built once, run with parameters
        self._reader: Any = None  # SQLite: one pooled connection kept for the hot reads
        self._reader_lock = threading.Lock()
        try:
            self.engine = database.create_engine(self.url)
            self.dialect = self.engine.dialect.name
            self._migrate()
        except (SQLAlchemyError, OSError) as exc:
            raise ManagerDatabaseError(
                f"cannot open the manager's database {self.location}: "
                f"{database.hide_password(str(getattr(exc, 'orig', None) or exc), self.url)}"
                .rstrip(".") + ".", url=self.location,
                hint="Check that the database is reachable and writable." if
                "sqlite" not in self.url.split(":", 1)[0] else
                "Check that the workspace folder is writable.") from None

    def close(self) -> None:
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        self.engine.dispose()

    def _migrate(self) -> None:
        with self.engine.connect() as conn:
            if database.current_revision(conn) == database.head_revision():
                return
        with self.transaction() as conn:
            database.upgrade(conn, self.location)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """A write transaction (nested calls join the outer one); rolled back on any error.
        Yields the SQLAlchemy connection; every store call in the same thread joins it."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self._writer, self.engine.connect() as conn:
            database.begin_write(conn)
            self._local.conn = conn
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            else:
                conn.commit()
            finally:
                self._local.conn = None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            yield conn
            return
        with self.engine.connect() as conn:
            yield conn

    def execute(self, statement: Any, params: Mapping[str, Any] | None = None) -> list[Row]:
        """Run ``statement`` (SQLAlchemy Core, or SQL text with ``:name`` parameters) in the
        current transaction, else on its own; return its rows (empty for writes)."""
        if isinstance(statement, str):
            statement = text(statement)
        with self._reading() as conn:
            result = conn.execute(statement, dict(params or {}))
            return result.fetchall() if result.returns_rows else []

    def _insert(self, table: Any) -> Any:
        if self.dialect == "sqlite":
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table)

    def _upsert(self, table: Any, keys: tuple[str, ...], values: dict[str, Any],
                updated: tuple[str, ...]) -> Any:
        stmt = self._insert(table).values(**values)
        return stmt.on_conflict_do_update(
            index_elements=list(keys), set_={k: stmt.excluded[k] for k in updated})

    def _statement(self, key: tuple[str, ...], build: Any) -> "_Prepared":
        prepared = self._statements.get(key)
        if prepared is None:
            prepared = self._statements[key] = _Prepared(build(), self.engine.dialect)
        return prepared

    def run(self, key: tuple[str, ...], build: Any,
            params: Mapping[str, Any] | None = None) -> list[tuple]:
        """Run the Core statement ``build()`` (built and compiled once per ``key``, with
        ``bindparam`` placeholders) with ``params``, as :meth:`execute` does but at a fraction
        of its cost; return its rows as tuples."""
        return self._run(self._statement(key, build), params or {})

    def _run(self, prepared: "_Prepared", params: Mapping[str, Any]) -> list[tuple]:
        """Run a prepared statement on the driver's cursor (the hot paths: a fraction of the
        Core execution's cost), in the current transaction, else on a pooled connection."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            return prepared.run(conn.connection.dbapi_connection, params)
        if self.dialect == "sqlite":
            # one connection, its page cache warm, read by one thread at a time: cheaper than a
            # connection per thread (pool checkout, a cold cache, WAL read locks, GIL hand-offs)
            with self._reader_lock:
                if self._reader is None:
                    self._reader = self.engine.raw_connection()
                return prepared.run(self._reader.dbapi_connection, params)
        raw = self.engine.raw_connection()
        try:
            return prepared.run(raw.dbapi_connection, params)
        finally:
            raw.close()

    @staticmethod
    def _next_seq(table: Any) -> Any:
        return select(func.coalesce(func.max(table.c.seq), 0) + 1).scalar_subquery()

    # --- records ------------------------------------------------------------------------------

    def put(self, record: Record) -> None:
        """Insert or replace ``record`` (it moves last among records created in its second)."""
        table = schema.records[record.kind]
        statement = self._statement(("put", record.kind), lambda: self._upsert(table, ("id",), {
            **{c: bindparam(c) for c in ("id", "owner", "name", "created_at", "body")},
            "seq": self._next_seq(table)}, _UPDATED))
        body = json.dumps(record.to_dict(), ensure_ascii=False)
        with self.transaction():
            self._run(statement, {"id": record.id, "owner": record.owner,
                                  "name": getattr(record, "name", None),
                                  "created_at": record.created_at, "body": body})

    def get(self, kind: str, record_id: str) -> Record | None:
        table = schema.records[kind]
        rows = self._run(self._statement(("get", kind), lambda: select(table.c.body).where(
            table.c.id == bindparam("id"))), {"id": record_id})
        return KINDS[kind].from_dict(json.loads(rows[0][0])) if rows else None

    def find(self, kind: str, *, name: str | None = None,
             owner: str | None = None) -> list[Record]:
        """Records of ``kind``, oldest first, optionally filtered by name and owner."""
        table = schema.records[kind]

        def build() -> Any:
            query = select(table.c.body)
            if name is not None:
                query = query.where(table.c.name == bindparam("name"))
            if owner is not None:
                query = query.where(table.c.owner == bindparam("owner"))
            return query.order_by(table.c.created_at, table.c.seq)

        key = ("find", kind, str(name is None), str(owner is None))
        rows = self._run(self._statement(key, build), {"name": name, "owner": owner})
        return [KINDS[kind].from_dict(json.loads(row[0])) for row in rows]

    # --- tokens, secrets, runtime configs, nonces, meta ----------------------------------------

    def set_token(self, token_hash: str, user_id: str) -> None:
        tokens = schema.tokens
        with self.transaction():
            self.run(("drop_token",), lambda: delete(tokens).where(
                tokens.c.user_id == bindparam("user_id")), {"user_id": user_id})
            self.run(("add_token",), lambda: tokens.insert().values(
                token_hash=bindparam("token_hash"), user_id=bindparam("user_id")),
                {"token_hash": token_hash, "user_id": user_id})

    def user_for_token(self, token_hash: str) -> str | None:
        tokens = schema.tokens
        rows = self._run(self._statement(("token",), lambda: select(tokens.c.user_id).where(
            tokens.c.token_hash == bindparam("hash"))), {"hash": token_hash})
        return rows[0][0] if rows else None

    def put_secret(self, dataset_id: str, sealed: bytes) -> None:
        with self.transaction() as db:
            db.execute(self._upsert(schema.dataset_secrets, ("dataset_id",),
                                    {"dataset_id": dataset_id, "sealed": sealed}, ("sealed",)))

    def get_secret(self, dataset_id: str) -> bytes | None:
        secrets = schema.dataset_secrets
        rows = self.execute(select(secrets.c.sealed).where(secrets.c.dataset_id == dataset_id))
        return bytes(rows[0][0]) if rows else None

    def put_runtime_config(self, config_id: str, workflow_id: str, app_config_id: str,
                           config_text: str, extra_text: str, created_at: str) -> None:
        table = schema.runtime_configs
        with self.transaction() as db:
            db.execute(self._upsert(table, ("id",), {
                "id": config_id, "workflow_id": workflow_id, "app_config_id": app_config_id,
                "config": config_text, "extra": extra_text, "created_at": created_at,
                "seq": self._next_seq(table)},
                ("workflow_id", "app_config_id", "config", "extra", "created_at", "seq")))

    def get_runtime_config(self, config_id: str) -> tuple[str, str, str, str] | None:
        """``(workflow_id, app_config_id, config JSON text, extra JSON text)``."""
        t = schema.runtime_configs
        rows = self.execute(select(t.c.workflow_id, t.c.app_config_id, t.c.config, t.c.extra)
                            .where(t.c.id == config_id))
        return tuple(rows[0]) if rows else None

    def runtime_config_ids(self) -> list[tuple[str, str]]:
        """``(config id, workflow id)`` of every runtime configuration, oldest first."""
        t = schema.runtime_configs
        return [tuple(r) for r in self.execute(
            select(t.c.id, t.c.workflow_id).order_by(t.c.created_at, t.c.seq))]

    def add_nonce(self, nonce: str, expires_at: float) -> None:
        with self.transaction() as db:
            db.execute(schema.nonces.insert().values(nonce=nonce, expires_at=expires_at))

    def issue_nonce(self, nonce: str, *, client: str, now: float, ttl: float,
                    outstanding: int, per_window: int, window: float, total: int) -> str:
        """Drop expired nonces, then store ``nonce`` for ``client`` (expiring ``ttl`` seconds
        after ``now``) unless one limit is reached; return "ok", or the limit that refused it:
        "outstanding" (``client`` holds that many unused ones), "rate" (``client`` took
        ``per_window`` in the last ``window`` seconds) or "total" (that many unused in all)."""
        n = schema.nonces
        with self.transaction() as db:
            db.execute(delete(n).where(n.c.expires_at < now))
            unused, recent = db.execute(select(
                func.coalesce(func.sum(case((n.c.used_at.is_(None), 1), else_=0)), 0),
                func.coalesce(func.sum(case((n.c.issued_at > now - window, 1), else_=0)), 0),
            ).where(n.c.client == client)).one()
            if unused >= outstanding:
                return "outstanding"
            if recent >= per_window:
                return "rate"
            if db.execute(select(func.count()).select_from(n).where(n.c.used_at.is_(None))
                          ).scalar_one() >= total:
                return "total"
            db.execute(n.insert().values(nonce=nonce, expires_at=now + ttl, used_at=None,
                                         client=client, issued_at=now))
            return "ok"

    def count_refusal(self, config_id: str, minute: str, reason: str, *,
                      keep_after: str) -> int:
        """Count one refused provision of ``config_id`` in ``minute`` (an ISO 8601 prefix);
        return how many that minute has now. Minutes before ``keep_after`` are dropped."""
        t = schema.provision_refusals
        with self.transaction() as db:
            db.execute(delete(t).where(t.c.minute < keep_after))
            stmt = self._insert(t).values(config_id=config_id, minute=minute, count=1,
                                          last_reason=reason)
            db.execute(stmt.on_conflict_do_update(
                index_elements=["config_id", "minute"],
                set_={"count": t.c.count + 1, "last_reason": stmt.excluded.last_reason}))
            return db.execute(select(t.c.count).where(t.c.config_id == config_id,
                                                      t.c.minute == minute)).scalar_one()

    def consume_nonce(self, nonce: str, now: float) -> str:
        """Mark ``nonce`` used; return "ok", "unknown", "used" or "expired"."""
        n = schema.nonces
        with self.transaction() as db:
            row = db.execute(select(n.c.expires_at, n.c.used_at).where(n.c.nonce == nonce)
                             ).first()
            if row is None:
                return "unknown"
            expires_at, used_at = row
            if used_at is not None:
                return "used"
            db.execute(update(n).where(n.c.nonce == nonce).values(used_at=now))
            if expires_at < now:
                return "expired"
            db.execute(delete(n).where(n.c.expires_at < now - 3600, n.c.used_at.is_(None)))
            return "ok"

    def get_meta(self, key: str) -> str | None:
        meta = schema.meta
        rows = self._run(self._statement(("meta",), lambda: select(meta.c.value).where(
            meta.c.key == bindparam("key"))), {"key": key})
        return rows[0][0] if rows else None

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.run(("set_meta",), lambda: self._upsert(
                schema.meta, ("key",), {"key": bindparam("key"), "value": bindparam("value")},
                ("value",)), {"key": key, "value": value})


class _Prepared:
    """A Core statement compiled once for ``dialect``: its SQL text and how to order its
    parameters (the constants Core turned into parameters included)."""

    __slots__ = ("sql", "names", "constants")

    def __init__(self, statement: Any, dialect: Any) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self.constants = {k: v for k, v in compiled.params.items() if v is not None}
        self.names = list(compiled.positiontup) if dialect.positional else None

    def run(self, dbapi_connection: Any, params: Mapping[str, Any]) -> list[tuple]:
        values = {**self.constants, **params}
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(self.sql, [values[n] for n in self.names] if self.names is not None
                           else values)
            return cursor.fetchall() if cursor.description is not None else []
        finally:
            cursor.close()

"""Where the manager's database lives and how it is opened, locked and upgraded.

The database is SQLite by default (``ccm.sqlite3`` in the manager's folder, mode 0600, WAL
journal) or any PostgreSQL server named by a URL (``--database-url`` or
``$NITRONB_DATABASE_URL``), e.g. ``postgresql://nitronb@db.example/nitronb`` (the password from
``~/.pgpass``) or ``postgresql:///nitronb?host=/var/run/postgresql`` (peer authentication over
the local socket): neither puts a password in the environment.

Writers serialize across processes and hosts: SQLite's ``BEGIN IMMEDIATE``, PostgreSQL's
transaction-scoped advisory lock :data:`WRITE_LOCK` taken first in each write transaction.
Migrations (alembic, :mod:`nitronb.ccm.migrations`) run inside such a transaction, so managers
starting at once upgrade the schema once. A URL is only ever shown with its password hidden.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from nitronb.errors import ManagerDatabaseError

ENV_URL = "NITRONB_DATABASE_URL"
SQLITE_NAME = "ccm.sqlite3"
#: the advisory lock every PostgreSQL write transaction takes first (b"nitronb\x01")
WRITE_LOCK = int.from_bytes(b"nitronb\x01", "big")
#: PRAGMA user_version of a SQLite database under alembic: the code that numbered its schema
#: itself (versions 1 and 2) refuses to open it rather than misread it
SQLITE_FENCE = 3
_LEGACY_REVISIONS = {1: "0001", 2: "0002"}
#: PostgreSQL connections one manager process (one worker) opens at most
CONNECTIONS_PER_PROCESS = 16
#: SQLite connections one manager process keeps open: more than the threads that serve requests
#: at once (the HTTP server's 40), so that no request pays for opening one (file, WAL, pragmas)
SQLITE_CONNECTIONS = 48
_MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def database_url(url: str | None = None, *, folder: str | os.PathLike[str]) -> str:
    """The manager's database: ``url`` when given, else ``$NITRONB_DATABASE_URL``, else the
    SQLite file ``ccm.sqlite3`` in ``folder``."""
    url = url or os.environ.get(ENV_URL) or ""
    return url.strip() or f"sqlite:///{Path(folder).resolve() / SQLITE_NAME}"


#: query parameters of a database URL that hold a secret (libpq takes ``?password=``)
_SECRET_PARAMETERS = ("password", "sslpassword")


def _parsed(url: str) -> Any:
    """``url`` parsed by SQLAlchemy, ``postgres://`` read as ``postgresql://`` (the form many
    hosting providers hand out); raises ``ArgumentError``/``ValueError`` if it is no URL."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.drivername == "postgres" or parsed.drivername.startswith("postgres+"):
        parsed = parsed.set(drivername="postgresql" + parsed.drivername[len("postgres"):])
    return parsed


def _secrets(parsed: Any) -> list[str]:
    found = [str(parsed.password)] if parsed.password else []
    for name in _SECRET_PARAMETERS:
        value = parsed.query.get(name)
        found += [value] if isinstance(value, str) else list(value or ())
    return [secret for secret in found if secret]


def redact(url: str) -> str:
    """``url`` with its password (if any, also a ``?password=`` parameter) shown as ``***``;
    something printable whatever ``url`` is."""
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = _parsed(url)
        hidden = {name: "***" for name in _SECRET_PARAMETERS if name in parsed.query}
        return parsed.update_query_dict(hidden).render_as_string(
            hide_password=True).replace("%2A%2A%2A", "***")
    except (ArgumentError, ValueError):
        return "<an unparsable database URL>"


def hide_password(text: str, url: str) -> str:
    """``text`` (an error message) with ``url``'s passwords replaced by ``***``."""
    from sqlalchemy.exc import ArgumentError

    try:
        secrets = _secrets(_parsed(url))
    except (ArgumentError, ValueError):
        return text.replace(url, "<the database URL>")
    text = text.replace(url, redact(url))
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///…`` URL (None for other databases or in-memory SQLite)."""
    parsed = _parsed(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or \
            parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def create_engine(url: str) -> Any:
    """A SQLAlchemy engine for ``url`` (``postgresql://`` uses psycopg 3); SQLite files are
    created mode 0600, journal in WAL. On both the driver commits each statement on its own
    unless the store began a transaction (:func:`begin_write`)."""
    import sqlalchemy
    from sqlalchemy import event

    parsed = _parsed(url)
    backend = parsed.get_backend_name()
    options: dict[str, Any] = {"hide_parameters": True, "pool_size": 10, "max_overflow": 30,
                               "pool_timeout": 60}
    if backend == "postgresql":
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        # at most CONNECTIONS_PER_PROCESS server connections per manager process
        options.update(pool_size=CONNECTIONS_PER_PROCESS // 2,
                       max_overflow=CONNECTIONS_PER_PROCESS // 2)
    elif backend == "sqlite":
        path = sqlite_path(url)
        if path is not None:
            _private_file(path)
        options["connect_args"] = {"timeout": 30, "check_same_thread": False}
        options.update(pool_size=SQLITE_CONNECTIONS, max_overflow=16)
    else:
        raise ManagerDatabaseError(
            f"the manager's database must be SQLite or PostgreSQL, not {backend!r} "
            f"({redact(url)}).", url=redact(url),
            hint="Use postgresql://USER@HOST/DATABASE, or no URL for the SQLite file.")
    engine = sqlalchemy.create_engine(parsed, **options)
    if backend == "postgresql":
        @event.listens_for(engine, "connect")
        def _postgresql_connection(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.autocommit = True  # a read is one round trip; BEGIN is the store's

    if backend == "sqlite":
        @event.listens_for(engine, "connect")
        def _sqlite_connection(dbapi_connection: Any, record: Any) -> None:
            dbapi_connection.isolation_level = None  # BEGIN is the store's to say
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000"):
                dbapi_connection.execute(f"PRAGMA {pragma}")
            if path is not None:
                for part in ("-wal", "-shm"):
                    if Path(f"{path}{part}").exists():
                        os.chmod(f"{path}{part}", 0o600)
    return engine


def _private_file(path: Path) -> None:
    """Create ``path`` mode 0600 if missing (SQLite gives -wal/-shm the same mode)."""
    if not path.exists():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass
    for part in ("", "-wal", "-shm"):
        if Path(f"{path}{part}").exists():
            os.chmod(f"{path}{part}", 0o600)


def begin_write(connection: Any) -> None:
    """Start a write transaction on ``connection`` that holds the database's write lock until
    it ends: ``BEGIN IMMEDIATE`` on SQLite, the advisory lock :data:`WRITE_LOCK` on
    PostgreSQL."""
    from sqlalchemy import text

    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        connection.exec_driver_sql("BEGIN")
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": WRITE_LOCK})


# --- migrations --------------------------------------------------------------------------------


def _alembic_config(connection: Any) -> Any:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The newest schema revision this nitronb knows."""
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(_MIGRATIONS)).get_current_head()


def current_revision(connection: Any) -> str | None:
    """The schema revision the database records (None: none yet, or a SQLite database from
    before alembic)."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def upgrade(connection: Any, location: str) -> None:
    """Bring the schema to :func:`head_revision` inside ``connection``'s write transaction
    (begun by :func:`begin_write`); a SQLite database numbered by ``PRAGMA user_version`` is
    stamped with its revision first. ``location`` (redacted) names the database in errors.
    Raises :class:`ManagerDatabaseError` when the database is newer than this nitronb."""
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its set-up chatter
    from alembic import command
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(_MIGRATIONS))
    head = script.get_current_head()
    current = current_revision(connection)
    sqlite = connection.dialect.name == "sqlite"
    legacy = connection.exec_driver_sql("PRAGMA user_version").scalar() if sqlite else 0
    known = {rev.revision for rev in script.walk_revisions()}
    if (current is not None and current not in known) or \
            (current is None and legacy and legacy not in _LEGACY_REVISIONS):
        raise ManagerDatabaseError(
            f"the manager's database {location} has schema "
            f"{current or f'version {legacy}'}, newer than this nitronb knows ({head}).",
            url=location, hint="Upgrade nitronb.")
    if current == head:
        return
    logging.getLogger("nitronb.ccm").info(
        "upgrading the manager's database %s from %s to %s", location,
        current or (f"version {legacy}" if legacy else "nothing"), head)
    config = _alembic_config(connection)
    if current is None and legacy:
        command.stamp(config, _LEGACY_REVISIONS[legacy])
    command.upgrade(config, "head")
    if sqlite:
        connection.exec_driver_sql(f"PRAGMA user_version={SQLITE_FENCE}")

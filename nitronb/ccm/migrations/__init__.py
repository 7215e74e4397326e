"""The manager's schema migrations (alembic): ``env.py`` runs them on the connection the store
gives it (``config.attributes["connection"]``), inside the store's write transaction; one file
per revision in ``versions/``. Revisions 0001 and 0002 are the schema versions 1 and 2 that
SQLite databases record in ``PRAGMA user_version`` from before alembic; the store stamps such a
database with its revision, then upgrades it. Never edit a released revision: add one."""

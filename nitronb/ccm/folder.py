"""The manager's folder (``<workspace>/ccm``) beside its database: the manager key that seals
dataset credentials, and the lock under which managers started at once set the folder up.

Every manager of one database must hold the same key: the database records a check value of
the key on first use (never the key), and a manager with another key refuses to start.
"""

from __future__ import annotations

import contextlib
import hmac
import os
from pathlib import Path
from typing import Iterator

from nitronb.ccm.store import Store

_KEY_CHECK = "manager_key_check"  # meta: which manager key seals the database's secrets


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold ``folder/.open.lock`` (flock): managers started at once on one machine set up the
    folder's files (manager key, tokens) one after the other."""
    import fcntl

    with open(folder / ".open.lock", "a+b") as handle:
        os.chmod(folder / ".open.lock", 0o600)
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _key_check(key: str) -> str:
    """A value that tells manager keys apart and reveals nothing of them."""
    return hmac.new(bytes.fromhex(key), b"nitronb manager key check", "sha256").hexdigest()


def manager_key(folder: Path, store: Store) -> str:
    """The manager key of ``folder`` (``manager.key``, created on first use), checked against
    the one the database's secrets are sealed with (recorded on first use)."""
    from nitronb.errors import ManagerDatabaseError
    from nitronb.keys import read_key_file, write_key_file

    key_path = folder / "manager.key"
    with store.transaction():
        recorded = store.get_meta(_KEY_CHECK)
        if recorded is None or key_path.exists():
            key = read_key_file(key_path) if key_path.exists() else write_key_file(key_path)
            if recorded is None:
                store.set_meta(_KEY_CHECK, _key_check(key))
                return key
            if hmac.compare_digest(recorded, _key_check(key)):
                return key
        raise ManagerDatabaseError(
            f"the manager's database {store.location} holds secrets sealed with another "
            f"manager key than {key_path}"
            + ("" if key_path.exists() else " (missing)") + ".", url=store.location,
            hint="Every manager of one database needs the same key: copy manager.key and "
                 "tokens.json from the ccm/ folder of the manager that created the database.")

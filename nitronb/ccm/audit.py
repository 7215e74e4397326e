"""The append-only audit log: who did what, when; each row chained to the one before it.

``hash = SHA-256(prev_hash + canonical JSON of the row)``; the newest row's id and hash are also
kept apart (``meta.audit_head``), so that removing rows from the end is detected too.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable

from sqlalchemy import Text, any_, bindparam, func, or_, select

from nitronb.ccm.schema import audit as _AUDIT
from nitronb.ccm.store import Store

GENESIS = "0" * 64
_HEAD = "audit_head"
_COLUMNS = tuple(_AUDIT.c[name] for name in ("id", "at", "actor", "action", "object_type",
                                             "object_id", "details", "prev_hash", "hash"))


def _row_hash(prev_hash: str, row: dict[str, Any]) -> str:
    canonical = json.dumps(row, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256((prev_hash + canonical).encode("utf-8")).hexdigest()


def _canonical(row_id: int, at: str, actor: str, action: str, object_type: str,
               object_id: str, details: Any) -> dict[str, Any]:
    return {"id": row_id, "at": at, "actor": actor, "action": action,
            "object_type": object_type, "object_id": object_id, "details": details}


def append(store: Store, *, at: str, actor: str, action: str, object_type: str,
           object_id: str, details: dict[str, Any] | None = None) -> int:
    """Append one row inside the caller's transaction; return its id."""
    details = details or {}
    with store.transaction():
        last = store.run(("audit_last",), lambda: select(_AUDIT.c.id, _AUDIT.c.hash).order_by(
            _AUDIT.c.id.desc()).limit(1))
        row_id, prev = (last[0][0] + 1, last[0][1]) if last else (1, GENESIS)
        digest = _row_hash(prev, _canonical(row_id, at, actor, action, object_type, object_id,
                                            details))
        store.run(("audit_append",), lambda: _AUDIT.insert().values(
            {c.name: bindparam(c.name) for c in _COLUMNS}), {
            "id": row_id, "at": at, "actor": actor, "action": action,
            "object_type": object_type, "object_id": object_id,
            "details": json.dumps(details, ensure_ascii=False), "prev_hash": prev,
            "hash": digest})
        store.set_meta(_HEAD, f"{row_id}:{digest}")
    return row_id


def _among(store: Store, ids: list[str]) -> Any:
    """The condition "object_id is one of ``ids``", one parameter whatever their number."""
    if store.dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import ARRAY

        return _AUDIT.c.object_id == any_(bindparam("visible_ids", ids, type_=ARRAY(Text)))
    listed = func.json_each(bindparam("visible_ids", json.dumps(ids))).table_valued("value")
    return _AUDIT.c.object_id.in_(select(listed.c.value))


def entries(store: Store, *, limit: int | None = None, object_id: str | None = None,
            visible: tuple[Iterable[str], str] | None = None) -> list[dict[str, Any]]:
    """Rows, oldest first (the last ``limit`` when given); with ``visible = (object ids,
    actor)`` only the rows about one of those objects or acted by that actor."""
    query = select(*_COLUMNS)
    if object_id is not None:
        query = query.where(_AUDIT.c.object_id == object_id)
    if visible is not None:
        query = query.where(or_(_among(store, sorted(visible[0])), _AUDIT.c.actor == visible[1]))
    query = query.order_by(_AUDIT.c.id.desc())
    if limit is not None:
        query = query.limit(int(limit))
    rows = store.execute(query)
    out = []
    for r in reversed(rows):
        out.append({"id": r[0], "at": r[1], "actor": r[2], "action": r[3], "object_type": r[4],
                    "object_id": r[5], "details": json.loads(r[6]), "prev_hash": r[7],
                    "hash": r[8]})
    return out


def verify(store: Store) -> dict[str, Any]:
    """``{"ok": True, "rows": n}`` or ``{"ok": False, "bad_row": id, "reason": …}``."""
    rows = store.execute(select(*_COLUMNS).order_by(_AUDIT.c.id))
    prev, expected_id = GENESIS, 1
    for r in rows:
        row_id = r[0]
        if row_id != expected_id:
            return {"ok": False, "bad_row": expected_id, "rows": len(rows),
                    "reason": f"row {expected_id} is missing (the next row is {row_id})."}
        if r[7] != prev:
            return {"ok": False, "bad_row": row_id, "rows": len(rows),
                    "reason": f"row {row_id} does not chain to the row before it."}
        try:
            details = json.loads(r[6])
        except (TypeError, ValueError):
            return {"ok": False, "bad_row": row_id, "rows": len(rows),
                    "reason": f"row {row_id} has unreadable details."}
        if _row_hash(prev, _canonical(row_id, r[1], r[2], r[3], r[4], r[5], details)) != r[8]:
            return {"ok": False, "bad_row": row_id, "rows": len(rows),
                    "reason": f"row {row_id} was edited: its content no longer matches its hash."}
        prev, expected_id = r[8], row_id + 1
    head = store.get_meta(_HEAD)
    last = f"{rows[-1][0]}:{rows[-1][8]}" if rows else None
    if head != last:
        bad = int(head.split(":")[0]) if head else (rows[0][0] if rows else 0)
        return {"ok": False, "bad_row": bad, "rows": len(rows),
                "reason": "the newest rows of the log were removed or replaced."}
    return {"ok": True, "rows": len(rows), "head": prev}

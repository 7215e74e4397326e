"""Limits on what unauthenticated clients can make the manager store.

Anyone may take a nonce (``POST /v1/runtime/nonces``) and ask for a provision. So that a flood
of either cannot grow the database without bound: a client (its remote address) holds at most
:attr:`NonceLimits.outstanding` unused nonces and takes at most :attr:`NonceLimits.per_window`
per window, all clients together hold at most :attr:`NonceLimits.total`, and expired nonces are
dropped whenever one is issued; beyond a limit the answer is 429 (:class:`TooManyRequestsError`).
Refused provisions of one runtime configuration get an audit row each for the first
:data:`AUDITED_REFUSALS_PER_MINUTE` in a minute; the rest are counted (table
``provision_refusals``: one row per configuration and minute, with the count and last reason).

The counts live in the database, not in process memory, so managers sharing one database share
the limits.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Callable

from nitronb.ccm.store import Store
from nitronb.errors import TooManyRequestsError

#: refused provisions of one runtime configuration given an audit row each, per minute
AUDITED_REFUSALS_PER_MINUTE = 5
#: how long the per-minute refusal counts are kept
REFUSAL_COUNTS_KEPT = timedelta(days=7)


@dataclass(frozen=True)
class NonceLimits:
    """How many nonces a client may take: ``outstanding`` unused at once, ``per_window`` every
    ``window`` seconds; ``total`` unused nonces for all clients together."""

    outstanding: int = 64
    per_window: int = 120
    window: float = 60.0
    total: int = 10_000


def take_nonce(store: Store, nonce_hex: str, *, client: str | None, ttl: float,
               limits: NonceLimits = NonceLimits(), now: float | None = None) -> None:
    """Store a fresh nonce issued to ``client`` (a remote address; None: unknown, all such
    clients share one allowance); TooManyRequestsError (429) when a limit is reached."""
    outcome = store.issue_nonce(nonce_hex, client=client or "", now=time.time() if now is None
                                else now, ttl=ttl, outstanding=limits.outstanding,
                                per_window=limits.per_window, window=limits.window,
                                total=limits.total)
    if outcome == "ok":
        return
    why = {
        "outstanding": f"this client already holds {limits.outstanding} unused nonces",
        "rate": f"this client took {limits.per_window} nonces in the last "
                f"{limits.window:g} seconds",
        "total": f"{limits.total} nonces are waiting to be used",
    }[outcome]
    raise TooManyRequestsError(f"too many nonces: {why}.",
                               hint="Use the nonces already taken, or try again in a minute.")


def record_refusal(store: Store, config_id: str, reason: str,
                   audit: Callable[[dict[str, str]], None], *,
                   now: datetime | None = None) -> None:
    """Count a refused provision of ``config_id``; ``audit(details)`` writes its audit row
    while fewer than :data:`AUDITED_REFUSALS_PER_MINUTE` were refused in the same minute."""
    now = now or datetime.now(timezone.utc)
    minute = now.strftime("%Y-%m-%dT%H:%MZ")
    keep_after = (now - REFUSAL_COUNTS_KEPT).strftime("%Y-%m-%dT%H:%MZ")
    with store.transaction():
        count = store.count_refusal(config_id, minute, reason, keep_after=keep_after)
        if count < AUDITED_REFUSALS_PER_MINUTE:
            audit({"reason": reason})
        elif count == AUDITED_REFUSALS_PER_MINUTE:
            audit({"reason": reason, "minute": minute,
                   "note": "further refusals of this configuration in this minute are counted "
                           "in provision_refusals, not logged one by one"})


__all__ = ["AUDITED_REFUSALS_PER_MINUTE", "NonceLimits", "take_nonce", "record_refusal"]

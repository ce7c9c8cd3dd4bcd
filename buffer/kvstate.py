"""The ``state`` table: opaque key → sealed bytes, written in an append's transaction.

Invariants:
1. Together or not at all: the rows of ``append(..., state=)`` are inserted inside the
   append's own transaction (:mod:`buffer.writer`), so a caller's persisted state never
   disagrees with the records it wrote.
2. Opaque: the store never interprets a value (``b""`` is a value, not a delete); a value is
   sealed like a payload, its associated data binding gateway, key name and key id
   (:func:`buffer.crypto.state_associated_data`), so a value copied to another key or gateway
   fails authentication.
3. Every key id a state row names is kept by :meth:`buffer.keyring.KeyRing.prune`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from buffer import crypto
from buffer.core import Core
from buffer.errors import from_sqlite

__all__ = ["StateRow", "read", "seal", "write"]

StateRow = tuple[str, int, bytes, bytes, int]  # key, key_id, nonce, sealed, updated_ms


def seal(core: Core, values: Mapping[str, bytes], updated_ms: int) -> list[StateRow]:
    """Seal ``values`` under the active key (outside the transaction: sealing is CPU only)."""
    key = core.keys.active
    rows: list[StateRow] = []
    for name, value in values.items():
        aad = crypto.state_associated_data(core.gateway, name, key.id)
        nonce, sealed = key.seal(crypto.pack(value), aad)
        rows.append((name, key.id, nonce, sealed, updated_ms))
    return rows


def write(conn: sqlite3.Connection, rows: list[StateRow]) -> None:
    """Inside the append's transaction: replace each key's value."""
    conn.executemany(
        "INSERT OR REPLACE INTO state(key, key_id, nonce, sealed, updated_ms)"
        " VALUES (?, ?, ?, ?, ?)",
        rows,
    )


def read(core: Core, prefix: str, *, exact: bool) -> dict[str, bytes]:
    """Every value whose key starts with ``prefix`` (or equals it, with ``exact``).

    Raises :class:`RecordAuthError` when a sealed value fails authentication."""
    conn = core.live()
    if exact:
        query = "SELECT key, key_id, nonce, sealed FROM state WHERE key = ?"
    else:  # keys are text: a range scan on the primary key, no LIKE escaping needed
        query = "SELECT key, key_id, nonce, sealed FROM state WHERE key >= ?"
    try:
        rows = conn.execute(query, (prefix,)).fetchall()
    except sqlite3.Error as exc:
        raise from_sqlite(exc, "reading state") from exc
    out: dict[str, bytes] = {}
    for name, key_id, nonce, sealed in rows:
        if not name.startswith(prefix):
            continue
        aad = crypto.state_associated_data(core.gateway, name, key_id)
        out[name] = crypto.unpack(core.keys.get(key_id).open(nonce, sealed, aad))
    return out

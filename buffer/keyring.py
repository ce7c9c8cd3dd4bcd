"""The store's keys: the key file reconciled with the database's ``keys`` table.

Invariants:
- Every key id any retained record (or quarantined record) names is in the key file, and the
  key file's key is the one the database's check value was sealed with; otherwise opening
  fails with :class:`BufferKeyError` (needs a human) instead of quarantining every record.
- The active key is the newest key of the configured cipher; changing the cipher in the config
  therefore rotates to a new key, and older records stay readable with their own keys.
- Key ids are never reused: a new id is one above every id in the file or the database.
- A key is written to the key file (fsynced) before any record is sealed with it, and removed
  from the file only when no record in ``records`` or ``quarantine`` names it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from buffer import crypto
from buffer.crypto import CipherName, Key
from buffer.errors import BufferKeyError, RecordAuthError

__all__ = ["ROTATE_AFTER_SEALS", "KeyRing"]

# Random 96-bit nonces: stay far below NIST's 2**32 seals per key.
ROTATE_AFTER_SEALS = 1 << 30


class KeyRing:
    """Keys by id, the active one, and how many seals the active key has made."""

    def __init__(
        self, *, path: Path, cipher: CipherName, keys: dict[int, Key], active: Key, sealed: int
    ) -> None:
        self._path = path
        self._cipher = cipher
        self._keys = keys
        self.active = active
        self._sealed = sealed

    @classmethod
    def load(cls, conn: sqlite3.Connection, path: Path, cipher: CipherName, now_ms: int) -> KeyRing:
        """Read (or create) the key file and check it against the database."""
        known = {
            kid: (c, nonce, sealed)
            for kid, c, nonce, sealed in conn.execute(
                "SELECT key_id, cipher, check_nonce, check_sealed FROM keys"
            )
        }
        # Key ids never registered cannot decrypt anything: such records are quarantined when
        # read, and do not block the open.
        needed = {
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT key_id FROM records UNION SELECT DISTINCT key_id FROM quarantine"
            )
        } & known.keys()
        if path.exists() or path.is_symlink():
            keys = {k.id: k for k in crypto.read_key_file(path)}
        elif needed:
            raise BufferKeyError(
                f"{path}: the key file is missing but the buffer holds records sealed with "
                f"key ids {sorted(needed)}; restore the key file or move the database aside"
            )
        else:
            keys = {}
        missing = needed - keys.keys()
        if missing:
            raise BufferKeyError(
                f"{path}: key ids {sorted(missing)} are missing but retained records need them"
            )
        for kid, (c, nonce, sealed) in known.items():
            key = keys.get(kid)
            if key is not None and (key.cipher != c or not key.matches(nonce, sealed)):
                raise BufferKeyError(
                    f"{path}: key {kid} is not the key this buffer was sealed with "
                    "(wrong key file?); restore the right one or move the database aside"
                )
        candidates = [k for k in keys.values() if k.cipher == cipher]
        if candidates:
            active = max(candidates, key=lambda k: k.id)
        else:
            active = crypto.new_key(max([0, *keys, *known]) + 1, cipher, now_ms)
            keys[active.id] = active
            crypto.write_key_file(path, keys.values())
        ring = cls(path=path, cipher=cipher, keys=keys, active=active, sealed=0)
        conn.execute("BEGIN IMMEDIATE")
        try:
            for key in keys.values():
                if key.id not in known:
                    ring._register(conn, key)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        row = conn.execute("SELECT sealed_count FROM keys WHERE key_id = ?", (active.id,))
        ring._sealed = row.fetchone()[0]
        return ring

    @classmethod
    def load_read_only(cls, conn: sqlite3.Connection, path: Path) -> KeyRing:
        """Read the key file and check it against the database, writing nothing (for readers
        beside a running agent). Raises :class:`BufferKeyError` as :meth:`load` does; records
        naming a key the file lacks fail authentication one by one instead."""
        keys = {k.id: k for k in crypto.read_key_file(path)}
        for kid, c, nonce, sealed in conn.execute(
            "SELECT key_id, cipher, check_nonce, check_sealed FROM keys"
        ):
            key = keys.get(kid)
            if key is not None and (key.cipher != c or not key.matches(nonce, sealed)):
                raise BufferKeyError(
                    f"{path}: key {kid} is not the key this buffer was sealed with "
                    "(wrong key file?)"
                )
        active = max(keys.values(), key=lambda k: k.id)
        return cls(path=path, cipher=active.cipher, keys=keys, active=active, sealed=0)

    @classmethod
    def from_key_file(cls, path: Path) -> KeyRing:
        """The key file alone, no database (salvage of a damaged file). Raises
        :class:`BufferKeyError`."""
        keys = {k.id: k for k in crypto.read_key_file(path)}
        active = max(keys.values(), key=lambda k: k.id)
        return cls(path=path, cipher=active.cipher, keys=keys, active=active, sealed=0)

    def get(self, key_id: int) -> Key:
        """The key with this id; :class:`RecordAuthError` if the ring does not hold it."""
        key = self._keys.get(key_id)
        if key is None:
            raise RecordAuthError(f"no key with id {key_id}")
        return key

    def ids(self) -> tuple[int, ...]:
        return tuple(sorted(self._keys))

    def count_seals(self, conn: sqlite3.Connection, key_id: int, n: int) -> None:
        """Inside the append transaction: persist the seal count."""
        conn.execute(
            "UPDATE keys SET sealed_count = sealed_count + ? WHERE key_id = ?", (n, key_id)
        )

    def after_commit(self, key_id: int, n: int) -> None:
        if key_id == self.active.id:
            self._sealed += n

    def needs_rotation(self) -> bool:
        return self._sealed >= ROTATE_AFTER_SEALS

    def rotate(self, conn: sqlite3.Connection, now_ms: int) -> int:
        """Make a fresh key active: key file first, then the database's check value."""
        kid = max([*self._keys, *self._known_ids(conn)]) + 1
        key = crypto.new_key(kid, self._cipher, now_ms)
        crypto.write_key_file(self._path, [*self._keys.values(), key])
        self._keys[kid] = key
        conn.execute("BEGIN IMMEDIATE")
        try:
            self._register(conn, key)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self.active = key
        self._sealed = 0
        return kid

    def prune(self, conn: sqlite3.Connection) -> None:
        """Remove from the key file the inactive keys no retained record names."""
        idle = [
            kid
            for kid in self._keys
            if kid != self.active.id
            and conn.execute(
                "SELECT EXISTS(SELECT 1 FROM records WHERE key_id = ?)"
                " OR EXISTS(SELECT 1 FROM quarantine WHERE key_id = ?)",
                (kid, kid),
            ).fetchone()[0]
            == 0
        ]
        if not idle:
            return
        keep = [k for kid, k in self._keys.items() if kid not in idle]
        crypto.write_key_file(self._path, keep)
        for kid in idle:
            del self._keys[kid]

    @staticmethod
    def _known_ids(conn: sqlite3.Connection) -> list[int]:
        return [r[0] for r in conn.execute("SELECT key_id FROM keys")]

    @staticmethod
    def _register(conn: sqlite3.Connection, key: Key) -> None:
        nonce, sealed = key.check_value()
        conn.execute(
            "INSERT INTO keys(key_id, cipher, check_nonce, check_sealed, created_ms)"
            " VALUES (?, ?, ?, ?, ?)",
            (key.id, key.cipher, nonce, sealed, key.created_ms),
        )

"""Sealing and keys: no plaintext on disk, authentication, AAD binding, key file handling."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from buffer import BufferKeyError, Stream
from buffer.crypto import Key, associated_data, new_key, pack, read_key_file, unpack
from buffer.errors import RecordAuthError
from tests.buffer.conftest import Clock, OpenStore

READING = b'{"tag":"GAS-4711-CH4","v":1.2345678,"unit":"%LEL"}'


def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "buffer.db"


def key_path(tmp_path: Path) -> Path:
    return tmp_path / "secrets" / "buffer.key"


def raw(tmp_path: Path) -> sqlite3.Connection:
    """Direct access to the database file, as an attacker or a bit flip would have."""
    return sqlite3.connect(db_path(tmp_path), isolation_level=None)


def test_the_key_file_is_created_with_mode_0600(open_store: OpenStore, tmp_path: Path) -> None:
    open_store().close()
    assert os.stat(key_path(tmp_path)).st_mode & 0o777 == 0o600


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_key_file_readable_by_group_or_others_is_refused(
    open_store: OpenStore, tmp_path: Path, mode: int
) -> None:
    open_store().close()
    os.chmod(key_path(tmp_path), mode)
    with pytest.raises(BufferKeyError, match="chmod 600"):
        open_store()


def test_a_malformed_key_file_is_refused_with_its_path(
    open_store: OpenStore, tmp_path: Path
) -> None:
    key_path(tmp_path).parent.mkdir(parents=True)
    key_path(tmp_path).write_text('{"format": "safeedge-buffer-keys", "version": 1, "keys": 3}')
    os.chmod(key_path(tmp_path), 0o600)
    with pytest.raises(BufferKeyError, match=str(key_path(tmp_path))):
        open_store()


def test_the_database_holds_no_plaintext_reading(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    for stream in Stream:
        store.append(stream, [READING] * 50 + [READING[:20]])
    files = sorted(db_path(tmp_path).parent.iterdir())
    assert any(f.name.endswith("-wal") for f in files)

    def leaks() -> list[str]:
        found = []
        for f in db_path(tmp_path).parent.iterdir():
            data = f.read_bytes()
            for needle in (READING, b"GAS-4711", b"1.2345678", b"%LEL"):
                if needle in data:
                    found.append(f"{f.name}: {needle!r}")
        return found

    assert leaks() == []  # WAL as written
    store.close()
    assert leaks() == []  # after the checkpoint
    # The test can fail: a plaintext needle is found when present.
    (db_path(tmp_path).parent / "probe").write_bytes(b"..GAS-4711..")
    assert leaks() == ["probe: b'GAS-4711'"]


def test_a_tampered_ciphertext_is_quarantined_and_the_rest_still_flows(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.TELEMETRY, [b"one", b"two", b"three"])
    store.close()
    with raw(tmp_path) as conn:
        sealed = conn.execute("SELECT sealed FROM records WHERE seq = 2").fetchone()[0]
        flipped = bytes([sealed[0] ^ 1]) + sealed[1:]
        conn.execute("UPDATE records SET sealed = ? WHERE seq = 2", (flipped,))
    conn.close()
    store = open_store()
    assert [r.payload for r in store.lease(max_count=10, max_bytes=1000)] == [b"one", b"three"]
    stats = store.stats()
    assert stats.streams[Stream.TELEMETRY].quarantined == 1
    assert stats.quarantine_rows == 1
    assert stats.streams[Stream.TELEMETRY].undelivered == 2


def test_a_record_naming_another_key_fails_authentication_and_is_quarantined(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"old key"])
    store.rotate_key()
    store.append(Stream.ALARM, [b"new key"])
    store.close()
    with raw(tmp_path) as conn:  # point the second record at key 1: the wrong key
        conn.execute("UPDATE records SET key_id = 1 WHERE seq = 2")
        conn.execute("UPDATE records SET key_id = 77 WHERE seq = 1")  # a key that never existed
    conn.close()
    store = open_store()
    assert store.lease(max_count=10, max_bytes=1000) == []
    assert store.resend(Stream.ALARM, 1, 2) == []
    assert store.stats().streams[Stream.ALARM].quarantined == 2


def test_sealed_payloads_cannot_be_swapped_between_seqs(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"first", b"second"])
    store.close()
    with raw(tmp_path) as conn:
        a, b = conn.execute("SELECT nonce, sealed FROM records ORDER BY seq").fetchall()
        conn.execute("UPDATE records SET nonce = ?, sealed = ? WHERE seq = 1", b)
        conn.execute("UPDATE records SET nonce = ?, sealed = ? WHERE seq = 2", a)
    conn.close()
    store = open_store()
    assert store.lease(max_count=10, max_bytes=1000) == []
    assert store.stats().streams[Stream.EVENT].quarantined == 2


def test_a_changed_creation_time_fails_authentication(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"e"])
    store.close()
    with raw(tmp_path) as conn:
        conn.execute("UPDATE records SET created_ms = created_ms - 1")
    conn.close()
    assert open_store().resend(Stream.EVENT, 1, 1) == []


def test_associated_data_binds_gateway_stream_seq_time_and_key() -> None:
    key = new_key(1, "aes-256-gcm", 0)
    aad = associated_data("gw-01", 0, 5, 1000, 1)
    nonce, sealed = key.seal(b"payload", aad)
    assert key.open(nonce, sealed, aad) == b"payload"
    for other in (
        associated_data("gw-02", 0, 5, 1000, 1),
        associated_data("gw-01", 1, 5, 1000, 1),
        associated_data("gw-01", 0, 6, 1000, 1),
        associated_data("gw-01", 0, 5, 1001, 1),
        associated_data("gw-01", 0, 5, 1000, 2),
    ):
        with pytest.raises(RecordAuthError):
            key.open(nonce, sealed, other)


def test_gateway_ids_cannot_be_shifted_into_the_stream_field() -> None:
    assert associated_data("gw", 1, 2, 3, 4) != associated_data("gw\x01", 1, 2, 3, 4)


@pytest.mark.parametrize("cipher", ["aes-256-gcm", "sm4-gcm"])
def test_seal_then_open_round_trips_and_a_fresh_nonce_is_used_each_time(cipher: str) -> None:
    key = new_key(3, cipher, 0)  # type: ignore[arg-type]
    aad = b"aad"
    n1, s1 = key.seal(b"hello", aad)
    n2, s2 = key.seal(b"hello", aad)
    assert n1 != n2
    assert s1 != s2
    assert key.open(n1, s1, aad) == key.open(n2, s2, aad) == b"hello"
    with pytest.raises(RecordAuthError):
        key.open(n1, s1[:-1] + bytes([s1[-1] ^ 0x80]), aad)


def test_pack_compresses_only_when_it_helps_and_unpack_inverts_it() -> None:
    for payload in (b"", b"x", READING * 20, os.urandom(200)):
        assert unpack(pack(payload)) == payload
    assert len(pack(READING * 20)) < len(READING * 20)
    with pytest.raises(RecordAuthError):
        unpack(b"\x07abc")


def test_an_sm4_gcm_store_round_trips_and_uses_16_byte_keys(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store(cipher="sm4-gcm")
    store.append(Stream.ALARM, [READING])
    store.close()
    [key] = read_key_file(key_path(tmp_path))
    assert (key.cipher, len(key.material)) == ("sm4-gcm", 16)
    store = open_store(cipher="sm4-gcm")
    assert [r.payload for r in store.lease(max_count=1, max_bytes=1000)] == [READING]


def test_changing_the_cipher_adds_a_key_and_old_records_stay_readable(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.EVENT, [b"aes"])
    store.close()
    store = open_store(cipher="sm4-gcm")
    store.append(Stream.EVENT, [b"sm4"])
    assert store.stats().active_key_id == 2
    assert [r.payload for r in store.resend(Stream.EVENT, 1, 2)] == [b"aes", b"sm4"]
    assert [k.cipher for k in read_key_file(key_path(tmp_path))] == ["aes-256-gcm", "sm4-gcm"]


def test_a_missing_key_file_is_refused_when_records_need_it(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"])
    store.close()
    key_path(tmp_path).unlink()
    with pytest.raises(BufferKeyError, match="missing"):
        open_store()


def test_a_key_file_with_other_keys_is_refused_instead_of_quarantining_everything(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    store.append(Stream.ALARM, [b"a"])
    store.close()
    doc = json.loads(key_path(tmp_path).read_text())
    doc["keys"][0]["key"] = "A" * 43 + "="
    key_path(tmp_path).write_text(json.dumps(doc))
    with pytest.raises(BufferKeyError, match="not the key"):
        open_store()


def test_a_fresh_key_file_is_made_when_the_buffer_holds_no_sealed_records(
    open_store: OpenStore, tmp_path: Path
) -> None:
    open_store().close()
    key_path(tmp_path).unlink()
    store = open_store()
    assert store.stats().active_key_id == 2  # ids are never reused
    assert store.append(Stream.ALARM, [b"a"]) == [1]


def test_rotation_keeps_old_keys_until_their_records_are_gone(
    open_store: OpenStore, tmp_path: Path, clock: Clock
) -> None:
    store = open_store(retention_days=1.0)
    store.append(Stream.TELEMETRY, [b"k1"])
    store.settle(accepted=[(Stream.TELEMETRY, 1)])
    assert store.rotate_key() == 2
    store.maintain()
    assert [k.id for k in read_key_file(key_path(tmp_path))] == [1, 2]
    clock.advance(2 * 86_400_000)
    store.append(Stream.TELEMETRY, [b"k2"])
    assert [r.payload for r in store.resend(Stream.TELEMETRY, 1, 2)] == [b"k1", b"k2"]
    store.maintain()  # k1 is delivered and past retention: it goes, and its key with it
    assert [k.id for k in read_key_file(key_path(tmp_path))] == [2]
    assert store.stats().key_ids == (2,)
    store.close()
    store = open_store(retention_days=1.0)
    assert [r.payload for r in store.resend(Stream.TELEMETRY, 1, 3)] == [b"k2"]
    assert store.append(Stream.TELEMETRY, [b"k2 again"]) == [3]


def test_keys_never_show_their_material_in_repr() -> None:
    key = Key(1, "sm4-gcm", b"\x01" * 16, 0)
    assert "material" not in repr(key)

"""Key file and AEAD sealing of record payloads.

Invariants:
- A (key, nonce) pair never repeats: every seal draws a fresh 12-byte nonce from ``os.urandom``
  (the store rotates a key long before 2**32 seals, NIST SP 800-38D's bound for random nonces).
- The associated data binds the gateway id, the stream, the seq, the creation time and the key
  id, so a sealed payload copied to another row, stream or gateway fails authentication.
- The key file is never readable by group or others: it is created with mode 0600 (written to a
  temporary file, fsynced, renamed, directory fsynced) and a key file with any group/other bit is
  refused with :class:`BufferKeyError` (needs a human), never silently "fixed".

Key file (UTF-8 JSON)::

    {"format": "safeedge-buffer-keys", "version": 1,
     "keys": [{"id": 1, "cipher": "aes-256-gcm", "key": "<base64, 32 bytes>",
               "created_ms": 1700000000000}]}

Key ids are positive, unique and never reused; AES-256-GCM keys are 32 bytes, SM4-GCM keys 16.

Sealed form of one payload: ``nonce`` (12 bytes, stored in its own column) and
``ciphertext || tag`` (16-byte GCM tag). The plaintext inside is one codec byte (0 = raw,
1 = zlib) followed by the body; zlib is used only when it makes the body smaller, laid out as
:func:`pack` says so that the uplink can splice the compressed body into its own zlib stream.

Associated data (big-endian)::

    b"SEB1" | u16 len(gateway) | gateway (UTF-8) | u8 stream | u64 seq | i64 created_ms | u32 key id

State rows (``Store.append(..., state=)``) use their own associated data, see
:func:`state_associated_data`.
"""

from __future__ import annotations

import base64
import binascii
import os
import stat
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from buffer.errors import BufferKeyError, RecordAuthError
from buffer.record import Deflated

__all__ = [
    "KEY_SIZES",
    "NONCE_SIZE",
    "CipherName",
    "Key",
    "associated_data",
    "new_key",
    "pack",
    "read_key_file",
    "state_associated_data",
    "unpack",
    "unpack_lazy",
    "write_key_file",
]

CipherName = Literal["aes-256-gcm", "sm4-gcm"]
KEY_SIZES: dict[str, int] = {"aes-256-gcm": 32, "sm4-gcm": 16}
NONCE_SIZE = 12
_TAG_SIZE = 16
_FORMAT = "safeedge-buffer-keys"
_RAW, _ZLIB = 0, 1
# pack()'s zlib layout: its header (CMF 0x78, FLEVEL 1 "fast"; pack() before it wrote 78 9c),
# the end of a sync flush, an empty final block, and what surrounds the deflate blocks.
_SPLICEABLE = b"\x78\x5e"
_SYNC_FLUSH_END = b"\x00\x00\xff\xff"
_FINAL_EMPTY = b"\x03\x00"
_LAYOUT_BYTES = len(_SPLICEABLE) + len(_FINAL_EMPTY) + 8  # + adler32 + size
_CHECK_PLAINTEXT = b"safeedge buffer key check"
# pack()'s zlib level. 4 (the first of zlib's lazy-matching levels) keeps within 1-5 % of the
# default 6's bytes at a third of its CPU on 1,000-tag telemetry bodies: 2-decimal readings
# 5.47 vs 5.20 KB and 193 vs 599 us, full doubles 12.7 vs 12.4 KB and 555 vs 1215 us; level 1
# would be faster again but 8-28 % bigger, and the buffer's bytes are its days of outage.
PACK_LEVEL = 4


class _KeyEntry(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int
    cipher: CipherName
    key: str
    created_ms: int


class _KeyFileDoc(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    format: str
    version: int
    keys: list[_KeyEntry]


@dataclass(frozen=True, slots=True)
class Key:
    """One AEAD key. ``material`` is kept out of ``repr`` so keys never reach a log line."""

    id: int
    cipher: CipherName
    material: bytes = field(repr=False)
    created_ms: int

    def __post_init__(self) -> None:
        if self.id < 1:
            raise BufferKeyError(f"key id {self.id} is not positive")
        if len(self.material) != KEY_SIZES[self.cipher]:
            raise BufferKeyError(
                f"key {self.id}: {self.cipher} needs {KEY_SIZES[self.cipher]} bytes, "
                f"got {len(self.material)}"
            )

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """Return ``(nonce, ciphertext || tag)`` under a fresh random nonce."""
        nonce = os.urandom(NONCE_SIZE)
        if self.cipher == "aes-256-gcm":
            return nonce, AESGCM(self.material).encrypt(nonce, plaintext, aad)
        enc = Cipher(algorithms.SM4(self.material), modes.GCM(nonce)).encryptor()
        enc.authenticate_additional_data(aad)
        body = enc.update(plaintext) + enc.finalize()
        return nonce, body + enc.tag

    def open(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt; raises :class:`RecordAuthError` on any mismatch."""
        if len(nonce) != NONCE_SIZE or len(sealed) < _TAG_SIZE:
            raise RecordAuthError(f"malformed sealed record (key {self.id})")
        try:
            if self.cipher == "aes-256-gcm":
                return AESGCM(self.material).decrypt(nonce, sealed, aad)
            body, tag = sealed[:-_TAG_SIZE], sealed[-_TAG_SIZE:]
            dec = Cipher(algorithms.SM4(self.material), modes.GCM(nonce, tag)).decryptor()
            dec.authenticate_additional_data(aad)
            return dec.update(body) + dec.finalize()
        except InvalidTag as exc:
            raise RecordAuthError(f"authentication failed (key {self.id})") from exc

    def check_value(self) -> tuple[bytes, bytes]:
        """A sealed known value that proves, later, that a key file holds this very key."""
        return self.seal(_CHECK_PLAINTEXT, self._check_aad())

    def matches(self, nonce: bytes, sealed: bytes) -> bool:
        """True when ``(nonce, sealed)`` is this key's :meth:`check_value`."""
        try:
            return self.open(nonce, sealed, self._check_aad()) == _CHECK_PLAINTEXT
        except RecordAuthError:
            return False

    def _check_aad(self) -> bytes:
        return b"SEB1-check" + struct.pack(">I", self.id) + self.cipher.encode()


def new_key(key_id: int, cipher: CipherName, created_ms: int) -> Key:
    """A fresh random key."""
    return Key(key_id, cipher, os.urandom(KEY_SIZES[cipher]), created_ms)


def associated_data(gateway_id: str, stream: int, seq: int, created_ms: int, key_id: int) -> bytes:
    """The AEAD associated data of one record (layout in the module docstring)."""
    gw = gateway_id.encode("utf-8")
    return b"SEB1" + struct.pack(f">H{len(gw)}sBQqI", len(gw), gw, stream, seq, created_ms, key_id)


def state_associated_data(gateway_id: str, key: str, key_id: int) -> bytes:
    """The AEAD associated data of one ``state`` row: a sealed value copied to another key or
    gateway fails authentication. ``b"SES1" | u16 len | gateway | u16 len | key | u32 key id``."""
    gw, k = gateway_id.encode("utf-8"), key.encode("utf-8")
    return b"SES1" + struct.pack(f">H{len(gw)}sH{len(k)}sI", len(gw), gw, len(k), k, key_id)


def pack(payload: bytes) -> bytes:
    """Codec byte + body: zlib when it helps, raw otherwise.

    The zlib body is laid out so that its deflate data can be handed out as it is
    (:func:`unpack_lazy`, :class:`buffer.record.Deflated`)::

        78 5e | deflate blocks ending with a sync flush (00 00 ff ff) | 03 00 | adler32 | u32 size

    ``03 00`` is an empty final block, ``adler32`` the payload's (the zlib trailer) and
    ``size`` its length, big-endian, after the end of the zlib stream. Any zlib reader
    inflates it as before and ignores what follows the stream (``zlib.decompress`` does: an
    older agent reads it, so a rollback keeps the buffer). The header's FLEVEL bits say "fast"
    (:data:`_SPLICEABLE`); the plain level-6 streams written before this layout say "default",
    so they are never taken for it.
    """
    c = zlib.compressobj(PACK_LEVEL, zlib.DEFLATED, -zlib.MAX_WBITS)
    blocks = c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH)
    if len(blocks) + _LAYOUT_BYTES >= len(payload):
        return bytes([_RAW]) + payload
    tail = struct.pack(">II", zlib.adler32(payload), len(payload))
    return b"".join((bytes([_ZLIB]), _SPLICEABLE, blocks, _FINAL_EMPTY, tail))


def unpack(plaintext: bytes) -> bytes:
    """Inverse of :func:`pack`; raises :class:`RecordAuthError` on an unknown codec."""
    out = unpack_lazy(plaintext)
    return out if isinstance(out, bytes) else out.inflate()


def unpack_lazy(plaintext: bytes) -> bytes | Deflated:
    """Like :func:`unpack`, but a zlib body in :func:`pack`'s layout comes back as its
    :class:`Deflated` form, not inflated (an older zlib body is inflated here)."""
    if not plaintext:
        raise RecordAuthError("empty plaintext")
    codec = plaintext[0]
    if codec == _RAW:
        return plaintext[1:]
    if codec != _ZLIB:
        raise RecordAuthError(f"unknown codec {codec}")
    if (
        len(plaintext) >= 1 + _LAYOUT_BYTES + len(_SYNC_FLUSH_END)
        and plaintext[1:3] == _SPLICEABLE
        and plaintext[-14:-8] == _SYNC_FLUSH_END + _FINAL_EMPTY
    ):
        adler, size = struct.unpack_from(">II", plaintext, len(plaintext) - 8)
        return Deflated(plaintext[3:-10], adler, size)
    try:
        return zlib.decompress(plaintext[1:])
    except zlib.error as exc:
        raise RecordAuthError("undecodable zlib body") from exc


def read_key_file(path: Path) -> list[Key]:
    """Read and validate the key file; :class:`BufferKeyError` says what is wrong and where."""
    try:
        st = path.stat()
    except OSError as exc:
        raise BufferKeyError(f"{path}: cannot stat the key file: {exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise BufferKeyError(f"{path}: the key file is not a regular file")
    if st.st_mode & 0o077:
        raise BufferKeyError(
            f"{path}: the key file is readable or writable by group/others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
        )
    try:
        doc = msgspec.json.decode(path.read_bytes(), type=_KeyFileDoc)
    except OSError as exc:
        raise BufferKeyError(f"{path}: cannot read the key file: {exc}") from exc
    except msgspec.ValidationError as exc:
        raise BufferKeyError(f"{path}: malformed key file: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise BufferKeyError(f"{path}: the key file is not valid JSON: {exc}") from exc
    if doc.format != _FORMAT or doc.version != 1:
        raise BufferKeyError(f"{path}: not a version 1 {_FORMAT} file")
    keys: list[Key] = []
    for entry in doc.keys:
        try:
            material = base64.b64decode(entry.key, validate=True)
        except binascii.Error as exc:
            raise BufferKeyError(f"{path}: key {entry.id}: invalid base64") from exc
        keys.append(Key(entry.id, entry.cipher, material, entry.created_ms))
    if not keys:
        raise BufferKeyError(f"{path}: the key file holds no keys")
    if len({k.id for k in keys}) != len(keys):
        raise BufferKeyError(f"{path}: duplicate key ids")
    return keys


def write_key_file(path: Path, keys: Iterable[Key]) -> None:
    """Atomically replace ``path`` with ``keys`` (mode 0600); raises :class:`BufferKeyError`.

    A symlink is written through: its final target is replaced (temporary file beside the
    target, then rename), so the link keeps pointing at the one key file that holds every key.
    """
    path = Path(os.path.realpath(path))
    doc = _KeyFileDoc(
        format=_FORMAT,
        version=1,
        keys=[
            _KeyEntry(k.id, k.cipher, base64.b64encode(k.material).decode(), k.created_ms)
            for k in sorted(keys, key=lambda k: k.id)
        ],
    )
    data = msgspec.json.format(msgspec.json.encode(doc), indent=2) + b"\n"
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise BufferKeyError(f"{path}: cannot write the key file: {exc}") from exc

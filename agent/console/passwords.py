"""Password hashes: scrypt (hashlib, RFC 7914), ``scrypt$N$r$p$salt_b64$hash_b64``.

N = 2**14, r = 8, p = 1 costs ~16 MiB and tens of ms: the server verifies in an executor thread
so a login never stalls the event loop (and with it the polls). Verification is constant-time
in the hash comparison; an unknown user is checked against a dummy hash so a wrong name and a
wrong password take the same time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Final

__all__ = ["hash_password", "verify_password"]

_N: Final = 2**14
_R: Final = 8
_P: Final = 1
_LEN: Final = 32
_MAXMEM: Final = 64 * 1024 * 1024


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hash_password(password: str, *, n: int = _N, r: int = _R, p: int = _P) -> str:
    if not password:
        raise ValueError("the password is empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=_LEN, maxmem=_MAXMEM
    )
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(digest)}"


_DUMMY: Final = hash_password("no user has this password")


def verify_password(password: str, encoded: str | None) -> bool:
    """True when ``password`` matches ``encoded``; None (unknown user) costs the same."""
    target = _DUMMY if encoded is None else encoded
    try:
        kind, n, r, p, salt, digest = target.split("$")
        if kind != "scrypt":
            return False
        want = base64.b64decode(digest, validate=True)
        got = hashlib.scrypt(
            password.encode("utf-8"),
            salt=base64.b64decode(salt, validate=True),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(want),
            maxmem=_MAXMEM,
        )
    except ValueError:  # a malformed hash (config checks catch most) never logs anyone in
        return False
    return encoded is not None and hmac.compare_digest(got, want)

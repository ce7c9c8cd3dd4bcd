"""``[console]``: the site's local web console (pure data, and its checks; no I/O).

Off by default. Bound to 127.0.0.1 unless ``host`` says otherwise; any other address needs
``tls_cert_file`` and ``tls_key_file`` (a control-room password must not cross a network in
clear text): a non-loopback bind without TLS is a config error, not a warning. Users are local
(``[[console.users]]``) with a scrypt hash written by ``safeedge console add-user``.
"""

from __future__ import annotations

import ipaddress
import zoneinfo
from typing import Annotated, Literal

import msgspec

__all__ = ["ConsoleConfig", "ConsoleUser", "console_issues"]

Role = Literal["viewer", "operator"]
UserName = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.\-]{1,64}$")]


class ConsoleUser(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """One operator account; ``password_hash`` is ``scrypt$N$r$p$salt$hash`` (base64)."""

    name: UserName
    role: Role = "viewer"
    password_hash: str


class ConsoleConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 8080  # 0: any free port (tests)
    tls_cert_file: str | None = None  # relative: to the config file's directory
    tls_key_file: str | None = None
    language: Literal["zh", "en"] = "zh"  # default; the browser's Accept-Language may pick
    timezone: str = "Asia/Shanghai"  # the site's time zone for every time shown
    anonymous_board: bool = False  # a read-only alarm board without login (wall screen)
    shelve_max_s: Annotated[float, msgspec.Meta(gt=0, le=7 * 86400)] = 8 * 3600.0
    history: Annotated[int, msgspec.Meta(ge=10, le=10_000)] = 200  # shift history entries
    session_ttl_s: Annotated[float, msgspec.Meta(ge=60, le=7 * 86400)] = 12 * 3600.0
    sparkline_s: Annotated[float, msgspec.Meta(ge=10, le=3600)] = 300.0
    users: tuple[ConsoleUser, ...] = ()

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console_issues(c: ConsoleConfig) -> list[tuple[str, str, str]]:
    """Problems of ``[console]`` as ``(path, message, hint)`` (relative to ``console``)."""
    out: list[tuple[str, str, str]] = []
    if (c.tls_cert_file is None) != (c.tls_key_file is None):
        out.append(("tls_key_file", "tls_cert_file and tls_key_file go together", "set both"))
    if not c.host or any(ch.isspace() or not ch.isprintable() for ch in c.host):
        out.append(("host", f"host {c.host!r} is empty or holds a space", 'e.g. "127.0.0.1"'))
    elif not _loopback(c.host) and not c.tls:
        out.append(
            (
                "host",
                f"the console binds {c.host!r} (not loopback) without TLS",
                'set tls_cert_file and tls_key_file, or host = "127.0.0.1"',
            )
        )
    try:
        zoneinfo.ZoneInfo(c.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        out.append(("timezone", f"unknown time zone {c.timezone!r}", 'e.g. "Asia/Shanghai"'))
    seen: set[str] = set()
    for i, user in enumerate(c.users):
        where = f'users[{i}] "{user.name}"'
        if user.name in seen:
            out.append((f"{where}.name", "duplicate user name", "give each user one entry"))
        seen.add(user.name)
        parts = user.password_hash.split("$")
        if len(parts) != 6 or parts[0] != "scrypt" or not all(p.isdigit() for p in parts[1:4]):
            msg = "password_hash is not a scrypt hash"
            out.append((f"{where}.password_hash", msg, "write it with safeedge console add-user"))
    return out

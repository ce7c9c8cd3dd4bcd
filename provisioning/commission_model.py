"""The commissioning report's vocabulary: check ids, one check's outcome, the options.

Every check yields one :class:`Check`: ``PASS``, ``WARN`` or ``FAIL``, with the evidence it
saw and the fix. :data:`CHECK_IDS` is the list (and order) of every report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

__all__ = ["CHECK_IDS", "Check", "Options", "Status"]

Status = Literal["PASS", "WARN", "FAIL"]
CHECK_IDS = (
    "config.valid",
    "setpoints.ceilings",
    "setpoints.units",
    "devices.answer",
    "tags.good",
    "tags.plausible",
    "devices.refused",
    "buffer.writable",
    "keys.permissions",
    "buffer.capacity",
    "rules.kernels",
    "clock.offset",
    "broker.tls",
    "broker.publish_own",
    "broker.acl",
    "cert.expiry",
    "systemd.unit",
)


@dataclass(frozen=True, slots=True)
class Check:
    id: str
    title: str
    status: Status
    evidence: str
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    """Where to look on this gateway (defaults: what install.sh sets up)."""

    unit_file: Path = Path("/etc/systemd/system/safeedge.service")
    numba_cache_dir: Path = Path("/var/cache/safeedge/numba")
    ntp_servers: tuple[str, ...] = ()
    max_clock_offset_s: float = 2.0
    cert_warn_days: float = 30.0
    max_exposure: float = 7.0  # systemd-analyze: above this the unit is "EXPOSED"
    skip: frozenset[str] = frozenset()  # check ids not run (reported as WARN "skipped")

"""Sequence state shared by several consumers of one fleet (shared subscriptions).

With ``$share/GROUP/...`` the broker gives each message to one member of the group, so a
gateway's stream is split between consumers: each one alone sees seqs 1, 3, 5 ... and would
report gaps that are not gaps, and a duplicate (a resend after a lost PUBACK) can reach a
member that never saw the original. De-duplication and gap tracking are therefore a property
of the (site, gateway, stream), not of a consumer: :class:`SharedSeqTracker` is that state,
one per platform, used by every :class:`central.inbox.Inbox` of the group (in one process here;
a platform with consumer processes keeps the same state in its database — the unique ``id``
and, per stream, the highest seq and the open holes; docs/uplink.md "Consumers at scale").
Under sharing a gap is provisional: another member may deliver the missing seq a moment later
(then it is ``late``); ask for a ``resend`` only for holes that stay open.
"""

from __future__ import annotations

import bisect
import threading
from typing import Final

from central.seqtrack import Gap, Verdict

__all__ = ["MAX_RANGES_PER_STREAM", "SharedSeqTracker"]

MAX_RANGES_PER_STREAM: Final = 1000


class SharedSeqTracker:
    """Exact per-stream bookkeeping of the seqs seen, safe for several inboxes on threads.

    Unlike :class:`central.seqtrack.SeqTracker` (one consumer, records in order), members of a
    shared subscription deliver a stream out of order: seq 2 may be handled by one member
    before seq 1 by another. So the seqs seen are kept as disjoint ranges: a seq inside a range
    is a ``duplicate``; one above the highest is ``new`` (with the :class:`Gap` up to it, if
    any); anything else (inside a hole, or below the first seen) is ``late`` and fills it. At
    most :data:`MAX_RANGES_PER_STREAM` ranges are kept per stream: beyond that the oldest hole
    is forgotten (a record filling it later counts as a duplicate).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lo: dict[tuple[str, str, str], list[int]] = {}
        self._hi: dict[tuple[str, str, str], list[int]] = {}

    def observe(self, site: str, gateway: str, stream: str, seq: int) -> tuple[Verdict, Gap | None]:
        key = (site, gateway, stream)
        with self._lock:
            lo, hi = self._lo.setdefault(key, []), self._hi.setdefault(key, [])
            i = bisect.bisect_right(lo, seq) - 1  # the range starting at or below seq
            if i >= 0 and seq <= hi[i]:
                return "duplicate", None
            top = hi[-1] if hi else None
            verdict: Verdict = "new" if top is None or seq > top else "late"
            gap = Gap(stream, top + 1, seq - 1) if top is not None and seq > top + 1 else None
            joins_left = i >= 0 and hi[i] == seq - 1
            joins_right = i + 1 < len(lo) and lo[i + 1] == seq + 1
            if joins_left and joins_right:
                hi[i] = hi[i + 1]
                del lo[i + 1], hi[i + 1]
            elif joins_left:
                hi[i] = seq
            elif joins_right:
                lo[i + 1] = seq
            else:
                lo.insert(i + 1, seq)
                hi.insert(i + 1, seq)
            if len(lo) > MAX_RANGES_PER_STREAM:  # forget the oldest hole
                hi[0] = hi[1]
                del lo[1], hi[1]
            return verdict, gap

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """The holes between the seqs seen (inclusive ranges), oldest first."""
        with self._lock:
            lo = self._lo.get((site, gateway, stream), [])
            hi = self._hi.get((site, gateway, stream), [])
            return [(hi[k] + 1, lo[k + 1] - 1) for k in range(len(lo) - 1)]

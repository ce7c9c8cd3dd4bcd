"""Sequence state shared by several consumers of one fleet (shared subscriptions).

With ``$share/GROUP/...`` the broker gives each message to one member of the group, so a
gateway's stream is split between consumers: each one alone sees seqs 1, 3, 5 ... and would
report gaps that are not gaps, and a duplicate (a resend after a lost PUBACK) can reach a
member that never saw the original. De-duplication and gap tracking are therefore a property
of the (site, gateway, stream), not of a consumer: :class:`SharedSeqTracker` is that state,
one per platform, used by every :class:`central.inbox.Inbox` of the group (in one process here;
a platform with consumer processes keeps the same state in its database — the unique ``id``
and, per stream, the seqs seen as ranges and the ranges the gateway reported lost;
docs/uplink.md "Consumers at scale"). Under sharing a gap is provisional: another member may
deliver the missing seq a moment later (then it is ``late``); ask for a ``resend`` only for
holes that stay open. A ``seq_gap`` event about a stream is one message on the *event* stream,
so it reaches one member, usually not the one that sees the telemetry jump: the ranges it
accounts for must be in the same central state, or the other members report them missing.
"""

from __future__ import annotations

import itertools
import threading
from typing import Final

from central.ranges import SeqRanges
from central.seqtrack import Gap, Verdict, jump_gap

__all__ = ["MAX_RANGES_PER_STREAM", "SharedSeqTracker"]

MAX_RANGES_PER_STREAM: Final = 1000


class SharedSeqTracker:
    """Exact per-stream bookkeeping of the seqs seen, safe for several inboxes on threads.

    Unlike :class:`central.seqtrack.SeqTracker` (one consumer, records in order), members of a
    shared subscription deliver a stream out of order: seq 2 may be handled by one member
    before seq 1 by another. So the seqs seen are kept as disjoint ranges: a seq inside a range
    is a ``duplicate``; one above the highest is ``new`` (with the :class:`Gap` up to it, if
    any); anything else (inside a hole, or below the first seen) is ``late`` and fills it. The
    ranges the gateway reported lost (:meth:`account`, from ``seq_gap`` events) are kept apart:
    they are never holes, and a jump over them only is no gap. At most
    :data:`MAX_RANGES_PER_STREAM` ranges of each are kept per stream: beyond that the oldest
    hole is forgotten (a record filling it later counts as a duplicate).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str, str], SeqRanges] = {}
        self._accounted: dict[tuple[str, str, str], SeqRanges] = {}

    def observe(self, site: str, gateway: str, stream: str, seq: int) -> tuple[Verdict, Gap | None]:
        key = (site, gateway, stream)
        with self._lock:
            seen = self._seen.setdefault(key, SeqRanges())
            if seen.contains(seq):
                return "duplicate", None
            top = seen.top
            verdict: Verdict = "new" if top is None or seq > top else "late"
            gap = None
            if top is not None and seq > top + 1:
                gap = jump_gap(stream, top + 1, seq - 1, self._accounted.get(key, SeqRanges()))
            seen.add(seq, seq)
            if len(seen) > MAX_RANGES_PER_STREAM:  # forget the oldest hole
                seen.fill_oldest_hole()
            return verdict, gap

    def account(self, site: str, gateway: str, stream: str, first: int, last: int) -> int:
        """The gateway reported ``first..last`` lost (``seq_gap``): accounted for, never
        missing, whichever member sees the records around them. Returns how many of them were
        newly accounted."""
        with self._lock:
            acc = self._accounted.setdefault((site, gateway, stream), SeqRanges())
            n = sum(b - a + 1 for a, b in acc.outside(first, last))
            acc.add(first, last)
            acc.drop_oldest(MAX_RANGES_PER_STREAM)
            return n

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        """The holes between the seqs seen that the gateway did not report lost (inclusive
        ranges), oldest first."""
        key = (site, gateway, stream)
        with self._lock:
            seen = self._seen.get(key, SeqRanges()).items()
            acc = self._accounted.get(key, SeqRanges())
            out: list[tuple[int, int]] = []
            for (_, hi), (lo, _) in itertools.pairwise(seen):
                out += acc.outside(hi + 1, lo - 1)
            return out

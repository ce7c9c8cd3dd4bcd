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

import threading

from central.seqtrack import Gap, SeqTracker, Verdict

__all__ = ["SharedSeqTracker"]


class SharedSeqTracker:
    """A :class:`SeqTracker` behind a lock, for several inboxes on several threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tracker = SeqTracker()

    def observe(self, site: str, gateway: str, stream: str, seq: int) -> tuple[Verdict, Gap | None]:
        with self._lock:
            return self._tracker.observe(site, gateway, stream, seq)

    def missing(self, site: str, gateway: str, stream: str) -> list[tuple[int, int]]:
        with self._lock:
            return self._tracker.missing(site, gateway, stream)

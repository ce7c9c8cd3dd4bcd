"""The uplink's session core, sans I/O: what one MQTT connection owes the store, and when to retry.

No sockets, no paho, no asyncio: the adapter (:mod:`agent.uplink.client`) feeds it events
(attempt began, CONNACK accepted or refused, a message id handed to the broker, a PUBACK, the
connection ended) and acts on what it returns. Time comes in as arguments or an injected clock.

Invariants (tested in tests/agent/uplink/test_session.py without a broker):

- every token accepted by :meth:`Session.sent` gets exactly one :class:`PublishResult`, in
  :meth:`Session.take_results`: on its PUBACK, or ``lost`` when the connection ends first;
- :attr:`Session.room` is how many more tokens fit the ``max_inflight`` window; a caller that
  respects it never has more than ``max_inflight`` in flight (tokens beyond it are accepted and
  queued by the transport until the window has room, as paho does). In flight is 0 whenever the
  session is not connected;
- a PUBACK for a message id the session does not track (the adapter's own state/meta
  publishes, a message id of a connection that already ended) changes nothing;
- the delay before reconnect attempt ``n`` (0-based, reset by a successful CONNACK) is drawn
  uniformly from ``[min, min(max, min·2^(n+1))]`` (:func:`backoff_delay`, full jitter);
- ``session`` counts successful CONNACKs from 1; the will registered for an attempt carries the
  number that attempt would get and the time the attempt began (the broker cannot know the time
  of death).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final

from agent.codec import state_payload

__all__ = [
    "REASON_LOST",
    "Outcome",
    "PublishResult",
    "Session",
    "UplinkConfigError",
    "UplinkStats",
    "backoff_delay",
    "mqtt_keepalive",
    "outcome_of",
]

REASON_LOST: Final = "lost"


class UplinkConfigError(ValueError):
    """The uplink cannot work with this configuration (needs a human)."""


class Outcome(enum.Enum):
    """What became of one QoS 1 publish; the one thing a caller has to branch on.

    ============  =====================================================================
    ACCEPTED      PUBACK reason < 0x80 (0x00, 0x10 no subscribers): done
    REJECTED      PUBACK reason ≥ 0x80 (0x87 not authorized, 0x97 quota ...): permanent
                  for this message → dead-letter
    LOST          the connection ended before a PUBACK → transient, send again
    ============  =====================================================================
    """

    ACCEPTED = "accepted"
    REJECTED = "rejected"
    LOST = "lost"


def outcome_of(reason_code: int | None) -> Outcome:
    """The outcome of a PUBACK reason code (None: no PUBACK came)."""
    if reason_code is None:
        return Outcome.LOST
    return Outcome.ACCEPTED if reason_code < 0x80 else Outcome.REJECTED


@dataclass(frozen=True, slots=True)
class PublishResult:
    """The broker's answer for one token.

    ``reason_code`` is the PUBACK reason code, or None when no PUBACK came (``lost``).
    ``reason`` is ``"lost"`` or the reason code's name in lower case (``"not authorized"``).
    ``accepted`` and ``lost`` are kept for callers that test flags; :attr:`outcome` says the same
    as one enum.
    """

    token: Any  # exactly the object given to publish(); Any so callers can unpack their own type
    accepted: bool
    reason: str
    lost: bool = False
    reason_code: int | None = None

    @property
    def outcome(self) -> Outcome:
        if self.lost:
            return Outcome.LOST
        return Outcome.ACCEPTED if self.accepted else Outcome.REJECTED


@dataclass(frozen=True, slots=True)
class UplinkStats:
    """Counters since construction (health reporting)."""

    connects: int  # connection attempts
    sessions: int  # successful CONNACKs
    disconnects: int  # sessions that ended
    refused: int  # CONNACKs refusing us (credentials, authorisation)
    published: int  # tokens handed to the client
    accepted: int
    rejected: int
    lost: int


def mqtt_keepalive(keepalive_s: int) -> int:
    """The MQTT keepalive given to paho for a configured ``keepalive_s``: three quarters of it.

    paho sends PINGREQ after one keepalive without traffic and drops the connection when no
    answer came one keepalive later, so its worst case is two keepalives; ¾ of the configured
    value keeps the detection of a half-open connection within 1.5 × ``keepalive_s``.
    """
    return max(1, (3 * keepalive_s) // 4)


def backoff_delay(
    attempt: int, min_s: float, max_s: float, uniform: Callable[[float, float], float]
) -> float:
    """Delay before reconnect attempt ``attempt`` (0-based): ``uniform(min, window)`` where
    ``window = min(max, min·2^(attempt+1))``, never below ``min_s`` nor above ``max(min, max)``.
    """
    hi = min(max(max_s, min_s), min_s * 2.0 ** min(attempt + 1, 62))
    return min(max(uniform(min_s, hi), min_s), hi)


class Session:
    """State of the gateway's MQTT session across connections (see the module docstring).

    Keyword-only: ``agent_version`` for the state payloads; ``max_inflight`` the window;
    ``reconnect_min_s``/``reconnect_max_s`` the backoff bounds; ``uniform(lo, hi)`` the jitter
    source (``random.Random().uniform``); ``clock_ms`` wall-clock epoch milliseconds;
    ``encoding`` the payload encoding the state messages announce (None: not announced).
    """

    def __init__(
        self,
        *,
        agent_version: str,
        max_inflight: int,
        reconnect_min_s: float,
        reconnect_max_s: float,
        uniform: Callable[[float, float], float],
        clock_ms: Callable[[], int],
        encoding: str | None = None,
    ) -> None:
        if max_inflight < 1:
            raise ValueError(f"max_inflight must be at least 1, got {max_inflight}")
        self._agent_version = agent_version
        self.max_inflight = max_inflight
        self._min_s = reconnect_min_s
        self._max_s = reconnect_max_s
        self._uniform = uniform
        self._clock_ms = clock_ms
        self._encoding = encoding  # announced in R/state (agent/uplink/encoding.py)
        self._connected = False
        self._attempt = 0  # failed attempts since the last successful CONNACK
        self._inflight: dict[int, Hashable] = {}
        self._results: list[PublishResult] = []
        self._n = dict.fromkeys(UplinkStats.__slots__, 0)

    # -- connection --------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def session(self) -> int:
        """The number of the current (or last) session; 0 before the first CONNACK."""
        return self._n["sessions"]

    def attempt(self) -> bytes:
        """A connection attempt begins: counts it and returns the will to register for it."""
        self._n["connects"] += 1
        return self.state(online=False, session=self._n["sessions"] + 1)

    def accepted(self) -> int:
        """A successful CONNACK: returns the new session number (the birth carries it)."""
        self._n["sessions"] += 1
        self._attempt = 0
        self._connected = True
        return self._n["sessions"]

    def refused(self) -> None:
        """A CONNACK refusing us (credentials, authorisation); the connection then ends."""
        self._n["refused"] += 1

    def ended(self) -> bool:
        """The connection (or attempt) ended: every in-flight token becomes ``lost``.

        Returns whether a session (a successful CONNACK) ended, as opposed to an attempt.
        """
        was = self._connected
        self._connected = False
        if was:
            self._n["disconnects"] += 1
        for token in self._inflight.values():
            self._add(PublishResult(token, False, REASON_LOST, lost=True))
        self._inflight.clear()
        return was

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt; each call advances the backoff window."""
        delay = backoff_delay(self._attempt, self._min_s, self._max_s, self._uniform)
        self._attempt += 1
        return delay

    def state(self, *, online: bool, session: int | None = None) -> bytes:
        """The retained ``R/state`` payload: the birth (online) or death/will (offline)."""
        return state_payload(
            online=online,
            ts_ms=self._clock_ms(),
            session=self._n["sessions"] if session is None else session,
            agent_version=self._agent_version,
            encoding=self._encoding,
        )

    # -- the in-flight window ----------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    @property
    def room(self) -> int:
        """How many more tokens fit the window now (0 when not connected or full)."""
        return max(0, self.max_inflight - len(self._inflight)) if self._connected else 0

    def sent(self, mid: int, token: Hashable) -> None:
        """``token`` was handed to the broker as message id ``mid``; its answer is now owed.

        Raises ValueError when not connected or ``mid`` is still in flight (a reused id would
        misattribute an answer).
        """
        if not self._connected:
            raise ValueError("sent() while not connected")
        if mid in self._inflight:
            raise ValueError(f"message id {mid} is already in flight")
        self._inflight[mid] = token
        self._n["published"] += 1

    def acked(self, mid: int, reason_code: int, reason: str) -> bool:
        """A PUBACK for ``mid``; returns False when no token was waiting for it."""
        token = self._inflight.pop(mid, None)
        if token is None:
            return False
        outcome = outcome_of(reason_code)
        self._add(
            PublishResult(
                token,
                outcome is Outcome.ACCEPTED,
                reason.lower(),
                lost=False,
                reason_code=reason_code,
            )
        )
        return True

    def take_results(self) -> list[PublishResult]:
        """Every result since the last call, in arrival order."""
        out, self._results = self._results, []
        return out

    @property
    def has_results(self) -> bool:
        return bool(self._results)

    def stats(self) -> UplinkStats:
        return UplinkStats(**self._n)

    def _add(self, result: PublishResult) -> None:
        self._results.append(result)
        self._n[result.outcome.value] += 1

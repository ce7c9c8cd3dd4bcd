"""Signed downlink commands: verification, replay protection and dispatch (design/UPLINK.md).

Wire format (``R/cmd``)::

    {"kid": "platform-2026", "payload": "<base64 of UTF-8 JSON>", "sig": "<base64 Ed25519>"}
    payload = {"id": "<uuid>", "ts": <ms>, "gw": "G1", "cmd": "ack_alarm", "args": {...}}

Every command gets exactly one :class:`CommandResult`, published on ``R/cmd/result`` as
``{"id", "status", "detail", "ts"}``. Checks, in this order; the first failure rejects the
command without acting, and ``detail`` starts with the reason code then ``": "``:

===================  ======================================================================
reason               meaning
===================  ======================================================================
``malformed``        not JSON, not the envelope above, payload not base64 JSON of the shape
``unsigned``         a JSON object without ``sig``/``kid`` (or empty ones)
``unknown_key``      ``kid`` is not in ``[commands].trusted_keys``
``bad_signature``    the signature does not verify over the payload bytes
``foreign_gateway``  ``gw`` is not this gateway
``expired``          ``ts`` is outside ± 300 s of the gateway clock
``unknown_command``  ``cmd`` is not a version-1 command
``bad_args``         ``args`` do not fit the command (unknown tag, bad seq range ...)
``replayed``         this ``id`` was seen before (or may have been: see :class:`ReplayStore`)
``replay_store_full`` too many distinct ids inside the window (transient: retry later)
``rate_limited``     more signed commands than ``verify_per_s``: not verified (retry later)
===================  ======================================================================

``id`` in a result is the payload's id when it could be read (even if unverified: it is for
correlation only), else ``null``. A command that passed every check is recorded as seen
*before* it acts (at most once, even across a crash), then answered ``ok`` with what it did, or
``error`` when acting failed (:class:`CommandFailedError`).

Verification and dispatch are sans-I/O; :class:`ReplayStore` owns one small JSON file.
Threading: a :class:`CommandProcessor` is used from one thread (the agent's event loop); only
the replay store's file write (:meth:`ReplayStore.write`, bytes snapshotted on the loop) runs
in a worker thread, started by the inbox (:meth:`CommandProcessor.record_job`).

Hostile input: JSON nested deeper than :data:`~agent.commands.limits.MAX_DEPTH` is refused
before decoding, integers and strings are bounded by the wire shapes, echoed fields are short
prefixes (:mod:`agent.commands.limits`); received bytes wait in a bounded queue drained by one
worker with bounded work per loop iteration (:mod:`agent.commands.inbox`).

Layout: :mod:`agent.commands.wire` (shapes, reasons, keys, signing),
:mod:`agent.commands.replay` (the replay store), :mod:`agent.commands.processor`
(verification and dispatch), :mod:`agent.commands.limits` and :mod:`agent.commands.inbox`;
everything but the last two is importable from ``agent.commands``.
"""

from agent.commands.processor import CommandProcessor
from agent.commands.replay import ReplayStore
from agent.commands.wire import (
    COMMANDS,
    REJECT_REASONS,
    WINDOW_MS,
    AckAlarmArgs,
    Command,
    CommandFailedError,
    CommandHandlers,
    CommandRejectedError,
    CommandResult,
    NoArgs,
    ResendArgs,
    load_public_keys,
    sign_command,
)

__all__ = [
    "COMMANDS",
    "REJECT_REASONS",
    "WINDOW_MS",
    "AckAlarmArgs",
    "Command",
    "CommandFailedError",
    "CommandHandlers",
    "CommandProcessor",
    "CommandRejectedError",
    "CommandResult",
    "NoArgs",
    "ReplayStore",
    "ResendArgs",
    "load_public_keys",
    "sign_command",
]

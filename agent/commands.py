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
===================  ======================================================================

``id`` in a result is the payload's id when it could be read (even if unverified: it is for
correlation only), else ``null``. A command that passed every check is recorded as seen
*before* it acts (at most once, even across a crash), then answered ``ok`` with what it did, or
``error`` when acting failed (:class:`CommandFailedError`).

Verification and dispatch are sans-I/O; :class:`ReplayStore` owns one small JSON file.
Threading: a :class:`CommandProcessor` is used from one thread (the agent's event loop).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.codec import cmd_result_payload
from agent.logs import kv

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

log = logging.getLogger(__name__)

WINDOW_MS: Final = 300_000
REJECT_REASONS: Final = (
    "malformed",
    "unsigned",
    "unknown_key",
    "bad_signature",
    "foreign_gateway",
    "expired",
    "unknown_command",
    "bad_args",
    "replayed",
    "replay_store_full",
)
Status = Literal["ok", "rejected", "error"]


class CommandRejectedError(Exception):
    """A command failed a check; ``reason`` is one of :data:`REJECT_REASONS`."""

    def __init__(self, reason: str, detail: str, command_id: str | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.command_id = command_id


class CommandFailedError(Exception):
    """A verified command could not be carried out (answered ``error``)."""


# -- wire shapes -----------------------------------------------------------------------------


class _Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kid: str
    payload: str
    sig: str


class _Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    ts: int
    gw: str
    cmd: str
    args: dict[str, Any] = {}


class AckAlarmArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``ack_alarm``: acknowledge ``high`` and/or ``low`` (``alarm`` None: both) of ``tag``."""

    tag: str
    alarm: Literal["high", "low"] | None = None
    user: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class ResendArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``resend``: republish still-retained records ``from_seq..to_seq`` (inclusive)."""

    stream: Literal["alarm", "event", "telemetry"]
    from_seq: Annotated[int, msgspec.Meta(ge=1)]
    to_seq: Annotated[int, msgspec.Meta(ge=1)]


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``rebirth`` and ``ping`` take no arguments."""


COMMANDS: Final[Mapping[str, type[msgspec.Struct]]] = {
    "ack_alarm": AckAlarmArgs,
    "rebirth": NoArgs,
    "resend": ResendArgs,
    "ping": NoArgs,
}


@dataclass(frozen=True, slots=True)
class Command:
    """A verified command; ``args`` is the command's args struct."""

    id: str
    ts: int
    gw: str
    cmd: str
    kid: str
    args: msgspec.Struct


@dataclass(frozen=True, slots=True)
class CommandResult:
    """The answer to one command; ``reason`` is set when rejected."""

    id: str | None
    status: Status
    detail: str
    ts: int
    cmd: str | None = None
    reason: str | None = None

    def payload(self) -> bytes:
        """The ``R/cmd/result`` bytes."""
        return cmd_result_payload(id=self.id, status=self.status, detail=self.detail, ts_ms=self.ts)


class CommandHandlers(Protocol):
    """What the agent does for each verified command; each returns a short ``detail`` for the
    result, or raises :class:`CommandFailedError` (answered ``error``) or
    :class:`CommandRejectedError` with reason ``bad_args`` (answered ``rejected``; nothing was
    done)."""

    def ack_alarm(self, args: AckAlarmArgs) -> str: ...

    def rebirth(self) -> str: ...

    def resend(self, args: ResendArgs) -> str: ...


# -- keys and signing ------------------------------------------------------------------------


def load_public_keys(trusted: Mapping[str, str]) -> dict[str, Ed25519PublicKey]:
    """Key id → public key from base64 raw keys (as checked by ``check_config``).

    Raises ValueError naming the key id for a key that is not 32 base64-encoded bytes.
    """
    out: dict[str, Ed25519PublicKey] = {}
    for kid, text in trusted.items():
        try:
            out[kid] = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"commands.trusted_keys.{kid}: not an Ed25519 public key") from exc
    return out


def sign_command(key: Ed25519PrivateKey, kid: str, payload: Mapping[str, Any]) -> bytes:
    """The signed ``R/cmd`` message for ``payload`` (the platform side; tests and
    ``safeedge sign-command`` use it). The payload is serialised once and signed as bytes."""
    raw = msgspec.json.encode(dict(payload))
    return msgspec.json.encode(
        {
            "kid": kid,
            "payload": base64.b64encode(raw).decode(),
            "sig": base64.b64encode(key.sign(raw)).decode(),
        }
    )


# -- replay store ----------------------------------------------------------------------------


class _ReplayFile(msgspec.Struct, frozen=True):
    seen: dict[str, int]
    floor_ts: int = 0


class ReplayStore:
    """Command ids seen, with their ``ts``, persisted in one JSON file (atomic replace + fsync).

    Bounded by ``max_ids``: when full, ids whose ``ts`` is already outside the window are
    forgotten first (they would be rejected as ``expired`` anyway); if every id is still inside
    the window the new command is refused (``replay_store_full``) rather than forgetting an id
    that could be replayed. A missing file is an empty store. An unreadable or corrupt file is
    moved aside (``.corrupt``) and, since the lost ids cannot be known, every command signed
    before the moment of loading is treated as replayed (``floor_ts``).
    """

    def __init__(self, path: Path, *, max_ids: int, clock_ms: Callable[[], int]) -> None:
        self._path = path
        self._max = max_ids
        self._clock_ms = clock_ms
        self.floor_ts = 0
        self._seen: dict[str, int] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as exc:
            self._lost(f"unreadable: {exc}")
            return
        try:
            doc = msgspec.json.decode(text, type=_ReplayFile)
            self._seen = dict(doc.seen)
            self.floor_ts = doc.floor_ts
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            with contextlib.suppress(OSError):
                path.replace(path.with_name(path.name + ".corrupt"))
            self._lost(f"corrupt: {exc}")

    def _lost(self, why: str) -> None:
        self.floor_ts = self._clock_ms()
        log.error(
            kv(
                "replay_store_lost",
                path=self._path,
                error=why,
                accepting_commands_after=self.floor_ts,
            )
        )

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, command_id: object) -> bool:
        return command_id in self._seen

    def check(self, command_id: str, ts_ms: int) -> None:
        """Raise :class:`CommandRejectedError` (``replayed``/``replay_store_full``) or return."""
        if command_id in self._seen or ts_ms < self.floor_ts:
            raise CommandRejectedError(
                "replayed", f"command id {command_id!r} was already seen", command_id
            )
        if len(self._seen) >= self._max:
            horizon = self._clock_ms() - WINDOW_MS
            self._seen = {k: v for k, v in self._seen.items() if v >= horizon}
            if len(self._seen) >= self._max:
                raise CommandRejectedError(
                    "replay_store_full",
                    f"{len(self._seen)} commands inside the time window; retry later",
                    command_id,
                )

    def add(self, command_id: str, ts_ms: int) -> None:
        """Record ``command_id`` durably (raises OSError when it cannot be written)."""
        self._seen[command_id] = ts_ms
        try:
            self._write()
        except OSError:
            del self._seen[command_id]
            raise

    def _write(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._path.with_name(self._path.name + ".tmp")
        data = msgspec.json.encode(_ReplayFile(seen=self._seen, floor_ts=self.floor_ts))
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)


# -- processing ------------------------------------------------------------------------------


def _b64(text: str, what: str, reason: str, command_id: str | None = None) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandRejectedError(reason, f"{what} is not base64", command_id) from exc


def _outer(raw: bytes) -> _Signed:
    try:
        doc = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        raise CommandRejectedError("malformed", f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise CommandRejectedError("malformed", "a command is a JSON object")
    if not doc.get("sig") or not doc.get("kid"):
        command_id = doc.get("id") if isinstance(doc.get("id"), str) else None
        raise CommandRejectedError(
            "unsigned", "no kid and sig: commands must be signed", command_id
        )
    try:
        return msgspec.convert(doc, _Signed)
    except msgspec.ValidationError as exc:
        raise CommandRejectedError("malformed", f"signed envelope: {exc}") from exc


def _peek_id(payload: bytes) -> str | None:
    with contextlib.suppress(msgspec.DecodeError):
        doc = msgspec.json.decode(payload)
        found = doc.get("id") if isinstance(doc, dict) else None
        if isinstance(found, str):
            return found[:128]
    return None


class CommandProcessor:
    """Verifies and dispatches commands (see the module docstring). ``rejected`` counts
    rejections by reason; ``accepted`` and ``failed`` count the others."""

    def __init__(
        self,
        *,
        gateway: str,
        trusted_keys: Mapping[str, Ed25519PublicKey],
        replay: ReplayStore,
        handlers: CommandHandlers,
        clock_ms: Callable[[], int],
    ) -> None:
        self._gateway = gateway
        self._keys = dict(trusted_keys)
        self._replay = replay
        self._handlers = handlers
        self._clock_ms = clock_ms
        self.rejected: dict[str, int] = dict.fromkeys(REJECT_REASONS, 0)
        self.accepted = 0
        self.failed = 0

    def verify(self, raw: bytes) -> Command:
        """Every check but replay; raises :class:`CommandRejectedError`."""
        outer = _outer(raw)
        payload = _b64(outer.payload, "payload", "malformed")
        command_id = _peek_id(payload)
        key = self._keys.get(outer.kid)
        if key is None:
            raise CommandRejectedError(
                "unknown_key", f"key id {outer.kid!r} is not trusted", command_id
            )
        sig = _b64(outer.sig, "sig", "bad_signature", command_id)
        try:
            key.verify(sig, payload)
        except InvalidSignature as exc:
            raise CommandRejectedError(
                "bad_signature", "signature does not verify", command_id
            ) from exc
        try:
            body = msgspec.json.decode(payload, type=_Payload)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CommandRejectedError("malformed", f"payload: {exc}", command_id) from exc
        if body.gw != self._gateway:
            raise CommandRejectedError("foreign_gateway", f"for gateway {body.gw!r}", body.id)
        skew = body.ts - self._clock_ms()
        if abs(skew) > WINDOW_MS:
            raise CommandRejectedError(
                "expired",
                f"ts is {skew / 1000:+.0f} s from the gateway clock (limit ±300 s)",
                body.id,
            )
        spec = COMMANDS.get(body.cmd)
        if spec is None:
            known = ", ".join(COMMANDS)
            raise CommandRejectedError("unknown_command", f"{body.cmd!r} (known: {known})", body.id)
        try:
            args = msgspec.convert(body.args, spec)
        except msgspec.ValidationError as exc:
            raise CommandRejectedError("bad_args", f"{body.cmd}: {exc}", body.id) from exc
        if isinstance(args, ResendArgs) and args.to_seq < args.from_seq:
            raise CommandRejectedError("bad_args", "resend: to_seq is below from_seq", body.id)
        return Command(body.id, body.ts, body.gw, body.cmd, outer.kid, args)

    def handle(self, raw: bytes) -> CommandResult:
        """Verify, record, act and answer; never raises for anything in ``raw``."""
        now = self._clock_ms()
        cmd: Command | None = None
        try:
            cmd = self.verify(raw)
            self._replay.check(cmd.id, cmd.ts)
            detail = self._act(cmd)
        except CommandRejectedError as exc:
            self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
            log.warning(
                kv("command_rejected", reason=exc.reason, id=exc.command_id, detail=exc.detail)
            )
            command_id = exc.command_id if cmd is None else cmd.id
            return CommandResult(
                command_id, "rejected", f"{exc.reason}: {exc.detail}", now, None, exc.reason
            )
        except (CommandFailedError, OSError) as exc:
            self.failed += 1
            assert cmd is not None
            log.error(kv("command_failed", cmd=cmd.cmd, id=cmd.id, error=exc))  # noqa: TRY400
            return CommandResult(cmd.id, "error", str(exc), now, cmd.cmd)
        self.accepted += 1
        log.info(kv("command_done", cmd=cmd.cmd, id=cmd.id, kid=cmd.kid, detail=detail))
        return CommandResult(cmd.id, "ok", detail, now, cmd.cmd)

    def _act(self, cmd: Command) -> str:
        # The id is recorded before acting: a crash mid-action never lets a replay act twice.
        # A handler's own bad_args rejection (unknown tag, range too long) comes after that:
        # it did nothing, and the platform sends a corrected command under a new id.
        self._replay.add(cmd.id, cmd.ts)
        args = cmd.args
        if isinstance(args, AckAlarmArgs):
            return self._handlers.ack_alarm(args)
        if isinstance(args, ResendArgs):
            return self._handlers.resend(args)
        if cmd.cmd == "rebirth":
            return self._handlers.rebirth()
        return "pong"

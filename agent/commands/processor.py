"""Verification and dispatch of signed commands (the checks of :mod:`agent.commands`)."""

from __future__ import annotations

import base64
import binascii
import contextlib
import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.commands.limits import ECHO_MAX, ID_ECHO_MAX, MAX_DEPTH, check_nesting, echo
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
    Payload,
    ResendArgs,
    Signed,
)
from agent.logs import RateLimiter, kv

__all__ = ["CommandProcessor"]

log = logging.getLogger("agent.commands")  # the name operators' log filters already use

DETAIL_MAX: Final = 200  # characters of a result's detail (it may quote parser messages)
REJECT_LOG_INTERVAL_S: Final = 10.0  # one command_rejected line per reason per interval


def _b64(text: str, what: str, reason: str, command_id: str | None = None) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise CommandRejectedError(reason, f"{what} is not base64", command_id) from exc


def _decode_any(raw: bytes, what: str, command_id: str | None = None) -> Any:
    """Untyped JSON, refused before decoding when it nests deeper than :data:`MAX_DEPTH`."""
    if not check_nesting(raw):
        raise CommandRejectedError(
            "malformed", f"{what}: nested deeper than {MAX_DEPTH} or unbalanced", command_id
        )
    try:
        return msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise CommandRejectedError("malformed", f"{what}: not JSON: {exc}", command_id) from exc


def _id_of(doc: object) -> str | None:
    found = doc.get("id") if isinstance(doc, dict) else None
    return echo(found, ID_ECHO_MAX) if isinstance(found, str) and found else None


def _outer(raw: bytes) -> Signed:
    doc = _decode_any(raw, "command")
    if not isinstance(doc, dict):
        raise CommandRejectedError("malformed", "a command is a JSON object")
    if not doc.get("sig") or not doc.get("kid"):
        raise CommandRejectedError(
            "unsigned", "no kid and sig: commands must be signed", _id_of(doc)
        )
    try:
        return msgspec.convert(doc, Signed)
    except msgspec.ValidationError as exc:
        raise CommandRejectedError("malformed", f"signed envelope: {exc}") from exc


def _peek_id(payload: bytes) -> str | None:
    with contextlib.suppress(CommandRejectedError):
        return _id_of(_decode_any(payload, "payload"))
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
        verify_allowed: Callable[[], bool] | None = None,
        log_interval_s: float = REJECT_LOG_INTERVAL_S,
    ) -> None:
        """``verify_allowed()`` is asked before each signature check (the per-second budget of
        :mod:`agent.commands.inbox`): False rejects the command ``rate_limited`` unverified."""
        self._verify_allowed = verify_allowed
        self._log_limiter = RateLimiter(log_interval_s)
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
                "unknown_key", f"key id {echo(outer.kid)!r} is not trusted", command_id
            )
        sig = _b64(outer.sig, "sig", "bad_signature", command_id)
        if self._verify_allowed is not None and not self._verify_allowed():
            raise CommandRejectedError(
                "rate_limited", "too many signed commands per second; retry later", command_id
            )
        try:
            key.verify(sig, payload)
        except InvalidSignature as exc:
            raise CommandRejectedError(
                "bad_signature", "signature does not verify", command_id
            ) from exc
        if not check_nesting(payload):
            raise CommandRejectedError("malformed", f"payload: nested deeper than {MAX_DEPTH}")
        try:
            body = msgspec.json.decode(payload, type=Payload)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
            raise CommandRejectedError("malformed", f"payload: {exc}", command_id) from exc
        if body.gw != self._gateway:
            raise CommandRejectedError("foreign_gateway", f"for gateway {echo(body.gw)!r}", body.id)
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
            raise CommandRejectedError(
                "unknown_command", f"{echo(body.cmd)!r} (known: {known})", body.id
            )
        try:
            args = msgspec.convert(body.args, spec)
        except msgspec.ValidationError as exc:
            raise CommandRejectedError("bad_args", f"{body.cmd}: {exc}", body.id) from exc
        if isinstance(args, ResendArgs) and args.to_seq < args.from_seq:
            raise CommandRejectedError("bad_args", "resend: to_seq is below from_seq", body.id)
        return Command(body.id, body.ts, body.gw, body.cmd, outer.kid, args)

    def handle(self, raw: bytes) -> CommandResult:
        """Verify, record, act and answer; never raises for anything in ``raw``. The replay
        store's fsync runs on the calling thread: the inbox uses :meth:`admit`, a write in a
        worker thread and :meth:`act` instead."""
        admitted = self.admit(raw)
        if isinstance(admitted, CommandResult):
            return admitted
        try:
            self.record_job()()
        except OSError as exc:
            return self.not_recorded(admitted, exc)
        return self.act(admitted)

    def admit(self, raw: bytes) -> Command | CommandResult:
        """Every check, then the command's id reserved in the replay store: the
        :class:`Command` to :meth:`act` on once the store is written (a duplicate meanwhile
        is ``replayed``), or the rejection. Never raises for anything in ``raw``."""
        now = self._clock_ms()
        try:
            cmd = self.verify(raw)
            self._replay.check(cmd.id, cmd.ts)
        except CommandRejectedError as exc:
            detail = echo(exc.detail, DETAIL_MAX)
            self._log_rejection(exc.reason, exc.command_id, detail)
            return CommandResult(
                exc.command_id, "rejected", f"{exc.reason}: {detail}", now, None, exc.reason
            )
        # The id is recorded before acting: a crash mid-action never lets a replay act twice.
        self._replay.reserve(cmd.id, cmd.ts)
        return cmd

    def record_job(self) -> Callable[[], None]:
        """The blocking write that makes every id reserved so far durable (a snapshot taken
        now): run it in a worker thread, then :meth:`act` (or :meth:`not_recorded` if it
        raised OSError). Jobs must not run concurrently with each other."""
        data = self._replay.snapshot()
        return functools.partial(self._replay.write, data)

    def not_recorded(self, cmd: Command, exc: OSError) -> CommandResult:
        """The answer to an admitted command whose id could not be written (not acted on)."""
        self._replay.forget(cmd.id)
        return self._failed(cmd, exc)

    def act(self, cmd: Command) -> CommandResult:
        """Act on an admitted command whose id is durably recorded, and answer."""
        now = self._clock_ms()
        try:
            detail = self._act(cmd)
        except CommandRejectedError as exc:
            # A handler's own bad_args rejection (unknown tag, range too long) did nothing,
            # and the platform sends a corrected command under a new id.
            detail = echo(exc.detail, DETAIL_MAX)
            self._log_rejection(exc.reason, cmd.id, detail)
            return CommandResult(
                cmd.id, "rejected", f"{exc.reason}: {detail}", now, None, exc.reason
            )
        except (CommandFailedError, OSError) as exc:
            return self._failed(cmd, exc)
        self.accepted += 1
        log.info(kv("command_done", cmd=cmd.cmd, id=cmd.id, kid=cmd.kid, detail=detail))
        return CommandResult(cmd.id, "ok", detail, now, cmd.cmd)

    def _failed(self, cmd: Command, exc: Exception) -> CommandResult:
        self.failed += 1
        log.error(kv("command_failed", cmd=cmd.cmd, id=cmd.id, error=exc))
        return CommandResult(cmd.id, "error", echo(str(exc), DETAIL_MAX), self._clock_ms(), cmd.cmd)

    def _log_rejection(self, reason: str, command_id: str | None, detail: str) -> None:
        """Counted always; logged once per reason per interval, with every reason's count."""
        self.rejected[reason] = self.rejected.get(reason, 0) + 1
        ok, suppressed = self._log_limiter.allow(reason)
        if ok:
            counts = ",".join(f"{r}:{n}" for r, n in self.rejected.items() if n)
            log.warning(
                kv(
                    "command_rejected",
                    reason=reason,
                    id=command_id,
                    detail=echo(detail, ECHO_MAX * 2),
                    suppressed=suppressed,
                    totals=counts,
                )
            )

    def _act(self, cmd: Command) -> str:
        args = cmd.args
        if isinstance(args, AckAlarmArgs):
            return self._handlers.ack_alarm(args)
        if isinstance(args, ResendArgs):
            return self._handlers.resend(args)
        if cmd.cmd == "rebirth":
            return self._handlers.rebirth()
        return "pong"

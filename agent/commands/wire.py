"""Commands on the wire: shapes, reject reasons, results, handlers, keys and signing.

See :mod:`agent.commands` for the format and the order of the checks.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal, Protocol

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.codec import cmd_result_payload
from agent.commands.limits import SEQ_MAX, TS_MAX

__all__ = [
    "COMMANDS",
    "REJECT_REASONS",
    "WINDOW_MS",
    "AckAlarmArgs",
    "Command",
    "CommandFailedError",
    "CommandHandlers",
    "CommandRejectedError",
    "CommandResult",
    "NoArgs",
    "Payload",
    "ResendArgs",
    "Signed",
    "load_public_keys",
    "sign_command",
]

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
    "rate_limited",
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


class Signed(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kid: Annotated[str, msgspec.Meta(max_length=64)]
    payload: str
    sig: Annotated[str, msgspec.Meta(max_length=128)]  # 64 bytes in base64 are 88


class Payload(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
    ts: Annotated[int, msgspec.Meta(ge=0, le=TS_MAX)]
    gw: Annotated[str, msgspec.Meta(max_length=64)]
    cmd: Annotated[str, msgspec.Meta(max_length=64)]
    args: dict[str, Any] = {}


class AckAlarmArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``ack_alarm``: acknowledge ``high`` and/or ``low`` (``alarm`` None: both) of ``tag``."""

    tag: Annotated[str, msgspec.Meta(max_length=256)]
    alarm: Literal["high", "low"] | None = None
    user: Annotated[str, msgspec.Meta(max_length=128)] | None = None
    comment: Annotated[str, msgspec.Meta(max_length=1024)] | None = None


class ResendArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``resend``: republish still-retained records ``from_seq..to_seq`` (inclusive)."""

    stream: Literal["alarm", "event", "telemetry"]
    from_seq: Annotated[int, msgspec.Meta(ge=1, le=SEQ_MAX)]
    to_seq: Annotated[int, msgspec.Meta(ge=1, le=SEQ_MAX)]


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

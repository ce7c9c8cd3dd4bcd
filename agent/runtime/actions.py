"""What verified commands do (design/UPLINK.md; verification is agent/commands.py).

Each handler gets exactly what it acts on: the rule engine and the alarm recorder for
``ack_alarm``, the uplink for ``rebirth``, the store and forwarder for ``resend``. Event loop
thread only (the store and engine live there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Final

from agent.commands import AckAlarmArgs, CommandProcessor, CommandRejectedError, ResendArgs
from agent.commands.inbox import CommandInbox
from agent.config import CommandsConfig
from agent.forwarder import Forwarder
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.incidents import IncidentTap
from agent.uplink import Uplink
from buffer import Store
from buffer.record import Stream
from rules import RuleEngine

__all__ = ["RESULTS_PENDING_MAX", "AlarmAcknowledger", "CommandActions", "CommandEndpoint"]

RESULTS_PENDING_MAX: Final = 100  # cmd/result publishes awaiting PUBACK; beyond: dropped


class AlarmAcknowledger:
    """The one acknowledgement path, for signed ``ack_alarm`` commands and the local console:
    the engine's acknowledge, ``user``/``comment`` (and ``source`` when given) added to each
    event, then recorded like any alarm event."""

    def __init__(
        self,
        *,
        tag_index: Mapping[str, int],
        engine: RuleEngine,
        alarms: AlarmRecorder,
        clock_ms: Callable[[], int],
        incidents: IncidentTap | None = None,
    ) -> None:
        self._tag_index = tag_index
        self._engine = engine
        self._alarms = alarms
        self._clock_ms = clock_ms
        self._incidents = incidents

    def ack_alarm(self, args: AckAlarmArgs, *, source: str | None = None) -> str:
        index = self._tag_index.get(args.tag)
        if index is None:
            raise CommandRejectedError("bad_args", f"ack_alarm: unknown tag {args.tag!r}")
        events = self._engine.acknowledge(index, self._clock_ms(), args.alarm)
        fields = (("user", args.user), ("comment", args.comment), ("source", source))
        who = {k: v for k, v in fields if v is not None}
        for event in events:
            event.extra.update(who)
        self._alarms.record(events)
        if self._incidents is not None:  # who acknowledged goes into the incident too
            self._incidents.on_events(events)
        done = ", ".join(f"{e.alarm} {e.event}" for e in events) or "nothing to acknowledge"
        return f"{args.tag}: {done}"


class CommandActions:
    """The :class:`agent.commands.CommandHandlers` of a running agent."""

    def __init__(
        self,
        *,
        tag_index: Mapping[str, int],
        engine: RuleEngine,
        alarms: AlarmRecorder,
        store: Store,
        forwarder: Forwarder,
        uplink: Uplink,
        max_resend: int,
        clock_ms: Callable[[], int],
        incidents: IncidentTap | None = None,
    ) -> None:
        self._acker = AlarmAcknowledger(
            tag_index=tag_index,
            engine=engine,
            alarms=alarms,
            clock_ms=clock_ms,
            incidents=incidents,
        )
        self._store = store
        self._forwarder = forwarder
        self._uplink = uplink
        self._max_resend = max_resend

    def ack_alarm(self, args: AckAlarmArgs) -> str:
        return self._acker.ack_alarm(args)

    def rebirth(self) -> str:
        return "state and meta republished" if self._uplink.rebirth() else "not connected"

    def resend(self, args: ResendArgs) -> str:
        limit = self._max_resend
        if args.to_seq - args.from_seq + 1 > limit:
            raise CommandRejectedError(
                "bad_args", f"resend: at most {limit} records per command ([commands].max_resend)"
            )
        stream = Stream[args.stream.upper()]
        records = self._store.resend(stream, args.from_seq, args.to_seq)
        self._forwarder.resend(records)
        return f"{len(records)} {args.stream} records queued for resend"


class CommandEndpoint:
    """Received commands → the bounded inbox → the processor → ``cmd/result``.

    :meth:`offer` is what the uplink calls per message (O(1)); :meth:`run` is the worker task
    (agent/commands/inbox.py has the bounds). ``report(reason, count)`` gets the rate-limited
    drop counts (the run turns them into ``commands_dropped`` events).
    """

    def __init__(
        self,
        *,
        processor: CommandProcessor,
        uplink: Uplink,
        limits: CommandsConfig,
        report: Callable[[str, int], None] | None = None,
    ) -> None:
        self.processor = processor
        self._uplink = uplink
        self.inbox = CommandInbox(
            processor=processor,
            publish=self._publish,
            report=report,
            max_bytes=limits.max_bytes,
            queue_max=limits.queue_max,
            max_per_s=limits.max_per_s,
        )

    def offer(self, raw: bytes) -> None:
        self.inbox.offer(raw)

    async def run(self) -> None:
        await self.inbox.run()

    def _publish(self, payload: bytes) -> bool:
        return self._uplink.publish_untracked(
            "cmd/result", payload, max_pending=RESULTS_PENDING_MAX
        )

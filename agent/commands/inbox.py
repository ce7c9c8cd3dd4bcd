"""Received commands off the monitoring path: a bounded queue and one worker task draining it.

Invariants (tested in tests/agent/test_commands_hostile.py against a running agent):

- :meth:`CommandInbox.offer` is O(1) and never parses: it runs inside paho's read. A message
  above ``max_bytes`` is dropped unparsed (``too_large``); when ``queue_max`` messages wait, the
  newest is dropped (``queue_full``). Nothing else is kept, so memory is bounded by
  ``queue_max × max_bytes``.
- The worker handles at most ``batch`` messages per loop iteration, then yields, and at most
  ``max_per_s`` per second on average (a token bucket): a poll task due meanwhile waits for at
  most one batch. Signature checks draw on their own budget (``verify_per_s``); a signed
  command beyond it is answered ``rate_limited`` without verifying. The replay store's write
  and fsync (one per batch for every command of it that passed the checks) runs in a worker
  thread, never on the loop: a slow disk delays the answers, not the polling.
- Every message the worker takes gets exactly one :class:`CommandResult` (the processor never
  raises for input; an internal error is answered too, with ``id`` null), except the accepted
  commands of a batch whose write the shutdown cancelled: those are counted ``stopped``. A
  result is handed to ``publish``; when that refuses (not connected, or too many results
  unacknowledged) it is dropped and counted (``result_dropped``).
- Drops are counted by reason in :attr:`CommandInbox.dropped` and reported through
  ``report(reason, count)`` at most once per ``report_interval_s`` per reason, with the count
  since the last report (the agent turns that into a ``commands_dropped`` event), and logged
  on the same schedule.

Threading: one event loop; :meth:`offer` is called on it (from the uplink's read callback).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from agent.commands.limits import TokenBucket
from agent.commands.processor import CommandProcessor
from agent.commands.wire import Command, CommandResult
from agent.logs import kv

__all__ = ["DROP_REASONS", "CommandInbox"]

log = logging.getLogger("agent.commands")

DROP_REASONS: Final = ("too_large", "queue_full", "result_dropped", "stopped")


class CommandInbox:
    """The bounded queue and worker of received commands (see the module docstring)."""

    def __init__(
        self,
        *,
        processor: CommandProcessor | None = None,
        handle: Callable[[bytes], CommandResult] | None = None,
        publish: Callable[[bytes], bool],
        report: Callable[[str, int], None] | None = None,
        max_bytes: int = 16384,
        queue_max: int = 256,
        max_per_s: float = 200.0,
        batch: int = 8,
        report_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``processor`` answers the messages (its replay-store writes in a worker thread), or
        ``handle`` does (one message, synchronously: tests); ``publish`` sends a result's bytes
        and says whether it was taken."""
        if (processor is None) == (handle is None):
            raise ValueError("CommandInbox needs a processor or a handle function (one)")
        self._processor = processor
        self._handle = handle
        self._publish = publish
        self._report = report
        self._max_bytes = max_bytes
        self._queue_max = queue_max
        self._batch = max(1, batch)
        self._interval = report_interval_s
        self._clock = clock
        self._rate = TokenBucket(rate=max_per_s, burst=max(float(self._batch), 1.0), now=clock())
        self._queue: collections.deque[bytes] = collections.deque()
        self._pending: list[Command] = []  # accepted, waiting for the next replay-store write
        self._writing: list[Command] = []  # accepted, their write in flight
        self._wake = asyncio.Event()
        self._closed = False
        self.dropped: dict[str, int] = dict.fromkeys(DROP_REASONS, 0)
        self._unreported: dict[str, int] = {}
        self._reported_at: dict[str, float] = {}
        self.received = 0
        self.answered = 0
        self.published = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    def offer(self, raw: bytes) -> None:
        """Take one received message (O(1), never parses, never raises)."""
        self.received += 1
        if self._closed:
            self._drop("stopped")
        elif len(raw) > self._max_bytes:
            self._drop("too_large")
        elif len(self._queue) >= self._queue_max:
            self._drop("queue_full")
        else:
            self._queue.append(raw)
            self._wake.set()

    def close(self) -> None:
        """No more messages are taken (shutdown); what waits is counted as ``stopped``, and so
        are accepted commands still waiting for their replay-store write (not acted on; their
        ids may be recorded: a retry under the same id is ``replayed``)."""
        self._closed = True
        for _ in range(len(self._queue)):
            self._queue.popleft()
            self._drop("stopped")
        for _ in range(len(self._pending) + len(self._writing)):
            self._drop("stopped")
        self._pending.clear()
        self._writing.clear()
        self._flush_reports(force=True)

    async def run(self) -> None:
        """Drain the queue forever (cancel to stop)."""
        while True:
            if not self._queue or len(self._pending) >= self._queue_max:
                self._wake.clear()
                timeout = self._interval if self._unreported else None
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout)
            self.step()
            self._flush_reports()
            wait = self._rate.wait_s(self._clock()) if self._queue else 0.0
            await asyncio.sleep(wait)  # 0: yield to the poll tasks between batches

    def step(self) -> int:
        """Handle at most one batch (as the budget allows); returns how many were handled.

        With a processor, commands that pass every check wait for the replay store's write
        (group commit): at most one write (one fsync) is in flight, in a worker thread, and
        the commands accepted meanwhile share the next one; each acts once its write is done.
        Rejections are answered at once, so they may overtake an earlier accepted command's
        answer. Accepted commands waiting are bounded by ``queue_max`` (beyond it the worker
        leaves messages in the queue until a write completes)."""
        done = 0
        while (
            self._queue
            and done < self._batch
            and len(self._pending) < self._queue_max
            and self._rate.take(self._clock())
        ):
            raw = self._queue.popleft()
            done += 1
            first = self._admit(raw)
            if isinstance(first, Command):
                self._pending.append(first)
            else:
                self._emit(first)
        self._start_write()
        return done

    def _start_write(self) -> None:
        if self._writing or not self._pending or self._processor is None:
            return
        job = self._processor.record_job()
        self._writing, self._pending = self._pending, []
        write = asyncio.get_running_loop().run_in_executor(None, job)
        write.add_done_callback(self._written)

    def _written(self, write: asyncio.Future[None]) -> None:
        """On the loop when a write finished: act on its commands (unless closed meanwhile)."""
        processor = self._processor
        assert processor is not None
        written, self._writing = self._writing, []  # empty when close() counted them stopped
        if write.cancelled():  # the loop is going away: nothing was acted on
            for _ in written:
                self._drop("stopped")
            return
        error = write.exception()
        if error is not None and not isinstance(error, OSError):  # a bug in the write
            log.error(kv("command_record_failed", error=repr(error)))
            error = OSError(f"replay store write failed: {type(error).__name__}")
        for cmd in written:
            try:
                result = processor.act(cmd) if error is None else processor.not_recorded(cmd, error)
            except Exception as exc:  # act() never raises for input: this is a bug, say so
                log.exception(kv("command_handler_failed", error=type(exc).__name__))
                result = CommandResult(cmd.id, "error", "internal error", int(time.time() * 1000))
            self._emit(result)
        if not self._closed:
            self._start_write()
            if self._queue:
                self._wake.set()  # the worker may have paused on a full set of pending commands

    def _admit(self, raw: bytes) -> Command | CommandResult:
        try:
            if self._processor is not None:
                return self._processor.admit(raw)
            assert self._handle is not None
            return self._handle(raw)
        except Exception as exc:  # never raises for input: this is a bug, say so
            log.exception(kv("command_handler_failed", error=type(exc).__name__))
            return CommandResult(None, "error", "internal error", int(time.time() * 1000))

    def _emit(self, result: CommandResult) -> None:
        self.answered += 1
        try:
            taken = self._publish(result.payload())
        except Exception as exc:  # an unencodable result is a bug: count it, keep going
            log.error(kv("command_result_failed", error=exc))  # noqa: TRY400
            taken = False
        if taken:
            self.published += 1
        else:
            self._drop("result_dropped")

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self._unreported[reason] = self._unreported.get(reason, 0) + 1
        if reason != "result_dropped" and self._unreported[reason] == 1:
            self._wake.set()  # the worker reports the first drop of a quiet period promptly

    def _flush_reports(self, *, force: bool = False) -> None:
        now = self._clock()
        for reason in list(self._unreported):
            last = self._reported_at.get(reason)
            if not force and last is not None and now - last < self._interval:
                continue
            count = self._unreported.pop(reason)
            self._reported_at[reason] = now
            log.warning(
                kv("commands_dropped", reason=reason, count=count, total=self.dropped[reason])
            )
            if self._report is not None:
                try:
                    self._report(reason, count)
                except Exception as exc:  # the event sink failing must not stop the worker
                    log.error(kv("commands_dropped_report_failed", error=exc))  # noqa: TRY400

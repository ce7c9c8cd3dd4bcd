"""Command ids seen, persisted: the replay protection of :mod:`agent.commands`."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

import msgspec

from agent.commands.wire import WINDOW_MS, CommandRejectedError
from agent.logs import kv

__all__ = ["ReplayStore"]

log = logging.getLogger("agent.commands")  # the name operators' log filters already use


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
        self.reserve(command_id, ts_ms)
        try:
            self.write(self.snapshot())
        except OSError:
            self.forget(command_id)
            raise

    # The same in two steps, so that the fsync (tens to hundreds of ms on a busy disk) can run
    # off the event loop: reserve() and snapshot() on the loop (a reserved id is "seen" at once,
    # a duplicate arriving meanwhile is ``replayed``), write() in a worker thread (it touches
    # nothing but the bytes and the files), then act, or forget() the ids when write() failed.

    def reserve(self, command_id: str, ts_ms: int) -> None:
        """Mark ``command_id`` seen in memory; durable only once a later :meth:`write` of a
        :meth:`snapshot` taken after this returned."""
        self._seen[command_id] = ts_ms

    def forget(self, command_id: str) -> None:
        """Undo :meth:`reserve` (its write failed: the command is answered ``error``)."""
        self._seen.pop(command_id, None)

    def snapshot(self) -> bytes:
        """The file's content now (for :meth:`write`)."""
        return msgspec.json.encode(_ReplayFile(seen=self._seen, floor_ts=self.floor_ts))

    def write(self, data: bytes) -> None:
        """Replace the file with ``data`` atomically and durably (fsync). Thread-safe with
        respect to the other methods; calls must not overlap each other."""
        self._path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self._path.with_name(self._path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self._path)

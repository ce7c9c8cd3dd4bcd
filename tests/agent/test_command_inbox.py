"""The command worker's replay-store writes: off the event loop, grouped, and exact accounting.

A real :class:`CommandProcessor` and :class:`ReplayStore` (real files, real fsync). The store's
``write`` is wrapped only to observe which thread runs it and to hold it in flight (a slow
disk) until the test lets it finish; what it writes is the store's own. No broker here: the
running agent under a flood is in test_commands_hostile.py.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.commands import (
    AckAlarmArgs,
    CommandProcessor,
    CommandResult,
    ReplayStore,
    ResendArgs,
    sign_command,
)
from agent.commands.inbox import CommandInbox

NOW = 1_764_300_000_000
KID = "platform-2026"


class HeldStore(ReplayStore):
    """A replay store whose writes wait for ``release`` (set by the test) and may fail."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, max_ids=100, clock_ms=lambda: NOW)
        self.release = threading.Event()
        self.started = threading.Event()
        self.writes: list[tuple[int, int]] = []  # (thread id, ids in the snapshot)
        self.fail = False

    def write(self, data: bytes) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released the write"
        self.writes.append((threading.get_ident(), len(msgspec.json.decode(data)["seen"])))
        if self.fail:
            raise OSError(28, "No space left on device")
        super().write(data)


class Actions:
    def __init__(self) -> None:
        self.done: list[str] = []

    def ack_alarm(self, args: AckAlarmArgs) -> str:
        self.done.append(args.tag)
        return "acked"

    def rebirth(self) -> str:
        return "reborn"

    def resend(self, args: ResendArgs) -> str:
        return "queued"


def ping(**over: Any) -> tuple[str, dict[str, Any]]:
    p = {"id": str(uuid.uuid4()), "ts": NOW, "gw": "G1", "cmd": "ping", "args": {}, **over}
    return p["id"], p


class Rig:
    def __init__(self, tmp: Path) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.store = HeldStore(tmp / "seen.json")
        self.actions = Actions()
        self.processor = CommandProcessor(
            gateway="G1",
            trusted_keys={KID: self.key.public_key()},
            replay=self.store,
            handlers=self.actions,
            clock_ms=lambda: NOW,
        )
        self.results: list[CommandResult] = []
        self.inbox = CommandInbox(
            processor=self.processor,
            publish=lambda b: self.results.append(msgspec.json.decode(b, type=CommandResult))
            or True,
            queue_max=50,
            max_per_s=10_000,
            batch=8,
        )

    def signed(self, payload: dict[str, Any]) -> bytes:
        return sign_command(self.key, KID, payload)

    def by_id(self) -> dict[str | None, str]:
        return {r.id: f"{r.status} {r.detail}" for r in self.results}


async def until(cond: Any, what: str) -> None:
    for _ in range(500):
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_the_fsync_runs_off_the_loop_and_commands_act_only_after_it(tmp_path: Path) -> None:
    rig = Rig(tmp_path)

    async def main() -> None:
        loop_thread = threading.get_ident()
        worker = asyncio.create_task(rig.inbox.run())
        first, p1 = ping()
        rig.inbox.offer(rig.signed(p1))
        rig.inbox.offer(b"not json")
        await until(rig.store.started.is_set, "the first write")
        # the write is held (a slow disk): the loop runs on, the rejection is answered at once,
        # the accepted ping has not acted yet, and its duplicate is already "replayed"
        ticks = 0
        for _ in range(20):
            await asyncio.sleep(0)
            ticks += 1
        rig.inbox.offer(rig.signed(p1))
        await until(lambda: len(rig.results) == 2, "the two rejections")
        assert [r.status for r in rig.results] == ["rejected", "rejected"]
        assert rig.results[1].detail.startswith("replayed") and rig.results[1].id == first
        assert first not in ReplayStore(tmp_path / "seen.json", max_ids=100, clock_ms=lambda: NOW)
        # three more pings accepted while the first write is in flight share the next write
        later = [ping() for _ in range(3)]
        for _, p in later:
            rig.inbox.offer(rig.signed(p))
        await until(lambda: rig.inbox.queued == 0, "the worker to take them")
        rig.store.release.set()
        await until(lambda: len(rig.results) == 6, "every answer")
        worker.cancel()
        assert ticks == 20
        assert all(tid != loop_thread for tid, _ in rig.store.writes)
        assert [n for _, n in rig.store.writes] == [1, 4]  # two writes, the second grouped
        answers = rig.by_id()
        assert answers[first] == "ok pong"
        assert all(answers[i] == "ok pong" for i, _ in later)
        on_disk = ReplayStore(tmp_path / "seen.json", max_ids=100, clock_ms=lambda: NOW)
        assert first in on_disk and all(i in on_disk for i, _ in later)
        assert rig.inbox.received == rig.inbox.answered == rig.inbox.published == 6

    asyncio.run(main())


def test_a_failed_write_answers_error_acts_on_nothing_and_the_id_can_be_retried(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)
    rig.store.fail = True
    rig.store.release.set()

    async def main() -> None:
        worker = asyncio.create_task(rig.inbox.run())
        cid, p = ping(cmd="ack_alarm", args={"tag": "GT-101"})
        rig.inbox.offer(rig.signed(p))
        await until(lambda: len(rig.results) == 1, "the answer")
        assert rig.results[0].status == "error" and "No space left" in rig.results[0].detail
        assert rig.actions.done == []
        rig.store.fail = False
        rig.inbox.offer(rig.signed(p))  # the same id again: not "replayed", it never acted
        await until(lambda: len(rig.results) == 2, "the retry's answer")
        worker.cancel()
        assert (rig.results[1].id, rig.results[1].status) == (cid, "ok")
        assert rig.actions.done == ["GT-101"]

    asyncio.run(main())


def test_closing_while_a_write_is_in_flight_counts_its_commands_as_stopped(
    tmp_path: Path,
) -> None:
    rig = Rig(tmp_path)

    async def main() -> None:
        worker = asyncio.create_task(rig.inbox.run())
        rig.inbox.offer(rig.signed(ping()[1]))
        await until(rig.store.started.is_set, "the write")
        rig.inbox.offer(rig.signed(ping()[1]))  # accepted, waits for the next write
        await until(lambda: rig.inbox.queued == 0, "the worker to take it")
        worker.cancel()
        rig.inbox.close()
        rig.store.release.set()
        await asyncio.sleep(0.2)  # the held write ends: nothing acts, nothing is answered

    asyncio.run(main())
    inbox = rig.inbox
    assert inbox.dropped["stopped"] == 2 and inbox.answered == 0 and rig.results == []
    assert inbox.received == inbox.answered + inbox.dropped["stopped"]

"""Watchdog pets only on progress; meta describes devices and tags; the loop bridge hands the
network thread's callbacks to the loop and drops them once detached."""

from __future__ import annotations

import asyncio
import json
import time

from agent.runtime import Components, RuntimeStats
from agent.runtime.forwarding import LoopBridge
from agent.runtime.meta import meta_payload
from agent.runtime.watchdog import watchdog


def _pets(stale_s: float) -> list[str]:
    sent: list[str] = []
    stats = RuntimeStats(last_poll_monotonic=time.monotonic() - stale_s)

    async def main() -> None:
        task = asyncio.create_task(
            watchdog(interval_s=0.02, slowest_poll_s=0.1, stats=stats, send=sent.append)
        )
        await asyncio.sleep(0.15)
        task.cancel()

    asyncio.run(main())
    return sent


def test_the_watchdog_is_petted_only_while_polls_make_progress() -> None:
    assert len(_pets(0.0)) >= 3 and set(_pets(0.0)) == {"WATCHDOG=1"}
    assert _pets(60.0) == []


def test_meta_lists_devices_and_tags_with_their_rules(components: Components) -> None:
    doc = json.loads(
        meta_payload(
            tags=components.tags,
            engine=components.engine,
            devices=components.devices,
            agent_version="9.9",
            config_hash=components.config_hash,
            ts_ms=5,
        )
    )
    assert (doc["v"], doc["ts"], doc["agent"]) == (1, 5, "9.9")
    assert [d["name"] for d in doc["devices"]] == ["plc-a", "plc-b"]
    assert [t["name"] for t in doc["tags"]] == ["T1", "T2", "L-3"]
    assert doc["tags"][0]["rules"]["high"] == 80.0


def test_the_bridge_hands_commands_over_at_once_and_only_while_attached() -> None:
    """No loop callback per command (a flood would grow the ready queue): the handler is the
    O(1) offer of the bounded inbox, called inside paho's read."""

    class Wakeable:  # stands in for the Forwarder: only its wake() is the bridge's business
        woken = 0

        def wake(self) -> None:
            self.woken += 1

    async def main() -> tuple[list[bytes], list[bytes], int]:
        loop = asyncio.get_running_loop()
        got: list[bytes] = []
        fwd = Wakeable()
        bridge = LoopBridge()
        bridge.on_command(b"too early")  # not attached yet: dropped
        bridge.on_results()
        bridge.attach(loop, got.append, fwd)  # type: ignore[arg-type]
        bridge.on_command(b"c1")
        inline = list(got)  # handed over inside the callback
        bridge.on_results()
        bridge.wake()
        await asyncio.sleep(0)
        bridge.detach()
        bridge.on_command(b"too late")
        await asyncio.sleep(0.01)
        return inline, got, fwd.woken

    inline, got, woken = asyncio.run(main())
    assert inline == [b"c1"]
    assert got == [b"c1"]
    assert woken == 2

"""The operations side of one run: the status snapshot, the control socket, the metrics
endpoint and the health loop, started after the store opens and stopped before it closes.

The snapshot is taken on the event loop (:meth:`OpsServices.status`); the store's statistics
(one read over the records table) are cached for :data:`STORE_STATS_TTL_S` so a ``--watch``
or a scrape cannot make polling wait on repeated full reads.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

from agent import __version__
from agent.config.operations import status_socket_path
from agent.logs import kv
from agent.runtime.alarms import AlarmRecorder
from agent.runtime.build import Components
from agent.runtime.control import ControlServer
from agent.runtime.health import health_loop
from agent.runtime.sink import RecordSink
from agent.runtime.stats import RuntimeStats
from agent.runtime.status import RateMeter, StatusSnapshot, snapshot
from agent.uplink import Uplink
from buffer import Store, StoreError, StoreStats

if TYPE_CHECKING:  # prometheus_client (4 MB) is imported only when the endpoint is on
    from agent.runtime.metrics import Metrics

__all__ = ["STORE_STATS_TTL_S", "OpsServices"]

log = logging.getLogger("safeedge.pipeline")
STORE_STATS_TTL_S: Final = 5.0


class _Run(Protocol):
    components: Components
    stats: RuntimeStats
    store: Store | None
    alarms: AlarmRecorder | None
    degraded: list[str]

    @property
    def delivered(self) -> int: ...


def _disk(db: Path) -> tuple[int, int] | None:
    """(database + WAL bytes on disk, free bytes of its file system), None if unreadable."""
    try:
        used = sum(p.stat().st_size for p in (db, db.with_name(db.name + "-wal")) if p.exists())
        return used, shutil.disk_usage(db.parent).free
    except OSError:
        return None


class OpsServices:
    def __init__(self, *, run: _Run, sink: RecordSink, clock_ms: Callable[[], int]) -> None:
        self._run = run
        self._sink = sink
        self._clock_ms = clock_ms
        self._rates = RateMeter()
        self._cached: tuple[float, StoreStats | None] = (-1e9, None)
        self._disk: tuple[int, int] | None = None
        self.control: ControlServer | None = None
        self.metrics: Metrics | None = None

    def status(self) -> StatusSnapshot:
        r = self._run
        now = time.monotonic()
        if now - self._cached[0] >= STORE_STATS_TTL_S and r.store is not None:
            try:
                self._cached = (now, r.store.stats())
            except StoreError as exc:
                log.warning(kv("status_store_stats_failed", error=exc))
            self._disk = _disk(r.components.paths.buffer_path)
        store_stats = self._cached[1]
        delivered = r.delivered
        uplink: Uplink | None = r.components.uplink
        return snapshot(
            components=r.components,
            stats=r.stats,
            alarms=r.alarms.book.open_alarms() if r.alarms is not None else (),
            store_stats=store_stats,
            uplink=uplink,
            delivered=delivered,
            rates=self._rates.observe(store_stats, delivered, now),
            degraded=r.degraded,
            agent_version=__version__,
            now_ms=self._clock_ms(),
            now_monotonic=now,
            disk=self._disk,
        )

    async def start(self) -> None:
        cfg = self._run.components.cfg
        ops = cfg.operations
        self.control = ControlServer(
            path=status_socket_path(cfg), group=ops.status_group, status=self.status
        )
        try:
            await self.control.start()
        except (OSError, KeyError) as exc:  # KeyError: no such group
            # the agent monitors without it; safeedge status then says it cannot connect
            log.error(kv("status_socket_failed", path=self.control.path, error=exc))  # noqa: TRY400
            self.control = None
        if ops.metrics.enabled:
            from agent.runtime.metrics import Metrics  # lazy: see the TYPE_CHECKING import

            self.metrics = Metrics(host=ops.metrics.host, port=ops.metrics.port)
            try:
                self.metrics.start()
            except OSError as exc:
                log.error(kv("metrics_failed", port=ops.metrics.port, error=exc))  # noqa: TRY400
                self.metrics = None

    async def health(self) -> None:
        await health_loop(
            status=self.status,
            sink=self._sink,
            interval_s=self._run.components.cfg.operations.health_interval_s,
            publish=self.metrics.publish if self.metrics is not None else None,
        )

    async def stop(self) -> None:
        if self.control is not None:
            await self.control.close()
        if self.metrics is not None:
            self.metrics.stop()

    def publish_now(self) -> StatusSnapshot:
        """Take a snapshot, hand it to the metrics endpoint and return it (at ready)."""
        snap = self.status()
        if self.metrics is not None:
            self.metrics.publish(snap)
        return snap

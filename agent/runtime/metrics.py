"""The optional Prometheus endpoint: the status snapshot's figures in Prometheus naming.

Off by default and on 127.0.0.1 by default (``[operations.metrics]``). The HTTP server is
prometheus_client's, on its own thread; it reads the last snapshot the event loop handed over
(:meth:`Metrics.publish`, an immutable object swapped by one assignment), so a scrape never
touches the store or the engine. A registry of its own per run: an in-process re-run after a
reload does not collide with the previous one's collectors.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from agent.logs import kv
from agent.runtime.status import BufferStatus, StatusSnapshot

__all__ = ["Metrics"]

log = logging.getLogger("safeedge.metrics")


class _SnapshotCollector(Collector):
    def __init__(self) -> None:
        self.snap: StatusSnapshot | None = None

    def collect(self) -> Iterator[Any]:
        s = self.snap
        if s is None:
            return
        yield _gauge("safeedge_uptime_seconds", "Seconds since this run started", s.uptime_s)
        yield _counter("safeedge_polls", "Device polls", s.polls)
        yield _counter("safeedge_samples", "Samples read", s.samples)
        yield _counter("safeedge_missed_deadlines", "Poll slots skipped late", s.missed_deadlines)
        yield _counter("safeedge_append_failures", "Records the buffer refused", s.append_failures)
        yield _gauge("safeedge_degraded", "1 when running degraded", 1.0 if s.degraded else 0.0)
        info = InfoMetricFamily("safeedge_config", "The running config", labels=["config_hash"])
        info.add_metric([s.config_hash], {"gateway": s.gateway, "agent": s.agent})
        yield info
        online = GaugeMetricFamily("safeedge_device_online", "1 online", labels=["device"])
        polls = CounterMetricFamily("safeedge_device_polls", "Polls", labels=["device"])
        rtt = GaugeMetricFamily(
            "safeedge_device_poll_duration_seconds",
            "Poll round trip over the last 256 polls",
            labels=["device", "quantile"],
        )
        good = GaugeMetricFamily(
            "safeedge_device_last_good_timestamp_seconds", "Last good read", labels=["device"]
        )
        reqs = GaugeMetricFamily(
            "safeedge_device_requests_per_cycle", "Reads per poll", labels=["device"]
        )
        for d in s.devices:
            online.add_metric([d.name], 1.0 if d.state == "online" else 0.0)
            polls.add_metric([d.name], d.polls)
            for q, v in (("0.5", d.rtt_p50_ms), ("0.95", d.rtt_p95_ms)):
                if v is not None:
                    rtt.add_metric([d.name, q], v / 1000.0)
            if d.last_good_ms is not None:
                good.add_metric([d.name], d.last_good_ms / 1000.0)
            if d.requests_per_cycle is not None:
                reqs.add_metric([d.name], d.requests_per_cycle)
        yield from (online, polls, rtt, good, reqs)
        active = GaugeMetricFamily("safeedge_alarms_open", "Open alarms", labels=["level"])
        for level in (0, 1, 2):  # level 0: latched, returned, unacknowledged
            active.add_metric([str(level)], sum(a.level == level for a in s.alarms))
        yield active
        yield _gauge(
            "safeedge_alarms_unacknowledged", "Open alarms not acknowledged",
            sum(not a.acked for a in s.alarms),
        )  # fmt: skip
        if s.buffer is not None:
            yield from _buffer(s.buffer)
        up = s.uplink
        yield _gauge("safeedge_uplink_connected", "1 connected", up.state == "connected")
        yield _gauge("safeedge_uplink_in_flight", "Publishes awaiting PUBACK", up.in_flight)
        yield _counter("safeedge_uplink_delivered", "Records acknowledged", up.delivered)
        if up.session is not None:
            yield _gauge("safeedge_uplink_session", "Session number", up.session)


def _buffer(b: BufferStatus) -> Iterator[Any]:
    yield _gauge("safeedge_buffer_bytes", "Accounted bytes retained", b.bytes)
    yield _gauge("safeedge_buffer_capacity_bytes", "Capacity", b.capacity_bytes)
    if b.file_bytes is not None:
        yield _gauge("safeedge_buffer_file_bytes", "Database and WAL on disk", b.file_bytes)
    if b.disk_free_bytes is not None:
        yield _gauge("safeedge_buffer_disk_free_bytes", "Free space there", b.disk_free_bytes)
    lab = ["stream"]
    backlog = GaugeMetricFamily("safeedge_buffer_undelivered_records", "Backlog", labels=lab)
    oldest = GaugeMetricFamily(
        "safeedge_buffer_oldest_undelivered_timestamp_seconds", "Oldest backlog", labels=lab
    )
    held = GaugeMetricFamily(
        "safeedge_buffer_days_held", "Days the capacity holds at the current rate", labels=lab
    )
    retention = GaugeMetricFamily("safeedge_buffer_retention_days", "Retention", labels=lab)
    evicted = CounterMetricFamily(
        "safeedge_buffer_evicted_records", "Undelivered records evicted", labels=lab
    )
    for name, st in b.streams.items():
        backlog.add_metric([name], st.undelivered)
        if st.oldest_undelivered_ms is not None:
            oldest.add_metric([name], st.oldest_undelivered_ms / 1000.0)
        if st.days_held is not None:
            held.add_metric([name], st.days_held)
        retention.add_metric([name], st.retention_days)
        evicted.add_metric([name], st.evicted_total)
    yield from (backlog, oldest, held, retention, evicted)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=float(value))


class Metrics:
    """``start`` serves http://host:port/metrics; ``publish`` hands over a new snapshot."""

    def __init__(self, *, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._collector = _SnapshotCollector()
        self._registry = CollectorRegistry(auto_describe=False)
        self._registry.register(self._collector)
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._server, self._thread = start_http_server(
            self.port, addr=self.host, registry=self._registry
        )
        log.info(kv("metrics_listening", host=self.host, port=self.port))

    def publish(self, snap: StatusSnapshot) -> None:
        self._collector.snap = snap

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

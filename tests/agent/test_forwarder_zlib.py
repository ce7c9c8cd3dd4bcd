"""Store → forwarder → uplink with compression, through a real Mosquitto to a real listener.

Records the buffer kept deflated go out spliced (their stored deflate data inside the zlib
stream of the envelope); small ones are compressed with their envelope. Either way the platform
gets, byte for byte, the zlib stream of exactly the envelope a plain uplink would send.
"""

from __future__ import annotations

import json
import random
import time
import zlib
from pathlib import Path

import pytest

from agent.codec import encode_envelope
from agent.config import UplinkConfig
from agent.forwarder import Forwarder
from agent.uplink.encoding import SPLICE_MIN_BYTES
from buffer import Store
from buffer.record import Stream
from central.listen import Listener, Message
from tests.support.loop_thread import ThreadedUplink
from tests.support.mosquitto import Broker, Subscriber

pytestmark = pytest.mark.integration

T0 = 1764300000123


def bodies() -> list[bytes]:
    rng = random.Random(7)
    big = [
        json.dumps(
            {
                "t0": T0,
                "at": [[0, {f"GT-{k:05d}": round(rng.uniform(0, 100), 1) for k in range(n)}]],
            }
        ).encode()  # fmt: skip
        for n in (400, 1000)
    ]
    v1 = json.dumps({"points": [[f"T{k}", T0, k] for k in range(300)]}).encode()
    small = b'{"t0": 1764300000123, "at": [[0, {"GT-101": 2.9}]]}'
    return [*big, v1, small]


def test_stored_deflated_bodies_reach_the_platform_as_the_zlib_stream_of_their_envelope(
    broker: Broker, tmp_path: Path
) -> None:
    payloads = bodies()
    assert [len(b) >= SPLICE_MIN_BYTES for b in payloads] == [True, True, True, False]
    store = Store.open(path=tmp_path / "b.db", key_file=tmp_path / "b.key", gateway_id="G1")
    store.append(Stream.TELEMETRY, payloads, created_ms=T0)
    cfg = UplinkConfig(host=broker.host, port=broker.port, compression="zlib",
                       reconnect_min_s=0.05)  # fmt: skip
    up = ThreadedUplink(config=cfg, site="S1", gateway="G1", agent_version="0")
    got: list[Message] = []
    listener = Listener(host=broker.host, port=broker.port, on_message=got.append, validate=True)
    listener.start()
    fwd = Forwarder(store=store, uplink=up, site="S1", gateway="G1", backfill_after_s=10,
                    max_inflight=20, clock_ms=lambda: T0 + 60_000)  # fmt: skip
    try:
        with Subscriber(broker, "safeedge/v1/S1/G1/telemetry") as raw:
            up.start()
            deadline = time.monotonic() + 10
            while fwd.stats.delivered < len(payloads) or len(raw.messages) < len(payloads):
                assert time.monotonic() < deadline, (fwd.stats, len(raw.messages))
                if fwd.pump() == 0:
                    time.sleep(0.005)
            for seq, (m, body) in enumerate(zip(raw.messages, payloads, strict=True), start=1):
                v = 1 if body.startswith(b'{"points"') else 2
                want = encode_envelope(site="S1", gateway="G1", stream="telemetry", seq=seq,
                                       ts_ms=T0, backfill=True, body=body, v=v)  # fmt: skip
                assert m.payload[0] == 0x78 and zlib.decompress(m.payload) == want
        deadline = time.monotonic() + 5
        while len([m for m in got if m.kind == "telemetry"]) < len(payloads):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        telemetry = [m for m in got if m.kind == "telemetry"]
        assert [m.encoding for m in telemetry] == ["json+zlib"] * len(payloads)
        assert [(m.error, m.schema_errors) for m in telemetry] == [(None, ())] * len(payloads)
        assert [m.envelope.seq for m in telemetry if m.envelope] == [1, 2, 3, 4]
    finally:
        listener.stop()
        up.close()
        store.close()

"""Buffer throughput and footprint: append (sealed vs unsealed, with the durability rule),
drain, bytes per reading, fsync counts, and the seq ledger's fsync rate.

Usage: ``.venv/bin/python benchmarks/bench_buffer.py [--records 300] [--tags 1000] [--repeat 3]``

Workload: one telemetry record per poll of a 1,000-tag device polled every second, built by the
agent's own codec (:func:`agent.codec.telemetry_body`): tag names like ``LT-0042``, values
``raw * scale`` from 16-bit registers drifting a little each poll (as the Modbus driver makes
them). Each append is one record (1,000 readings) in one transaction, as the pipeline does; a
second row appends 10-reading records (many small devices).

Baseline (ratio 1.00): the same :class:`buffer.Store`, same schema, same compression and
transactions, with the AEAD replaced by an identity "sealer" (plaintext plus a zero 16-byte
tag, so row sizes match). The identity sealer exists only here: it is swapped into the opened
store's key ring (private attributes), and the run checks that the baseline database really
holds plaintext. Figures are the best of ``--repeat`` runs.

Durability rule: a record is leased only once its commit is on disk (one WAL fsync per forward
batch, made by ``lease`` when something was committed since the last one). "fsync every N"
rows append N records, then make them durable as the forwarder's next lease would
(``N = 1``: the forwarder leases after every poll, the worst case while connected); "no fsync"
is appending while nothing is leased (an outage). The seq ledger is on in every row.

Ledger rate: 1,000 tags polled at 1 Hz for 600 simulated seconds (an injected monotonic
clock), once as one 1,000-reading record per poll and once as 1,000 single-reading records
per second (the worst case); ledger fsyncs per simulated second (target <= 1).

Drain = lease (decrypt) + settle, 100 records per lease, until nothing is left.
Bytes on disk = database file size after close (WAL checkpointed) / readings appended.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sqlite3
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import cryptography

from agent.codec import telemetry_body
from buffer import Store, Stream
from buffer.crypto import NONCE_SIZE, CipherName, Key

T0_MS = 1_700_000_000_000
_TAG = bytes(16)


@dataclass(frozen=True, slots=True)
class _PlainKey(Key):
    """Benchmark baseline only: no encryption, same sizes as AES-GCM output."""

    def seal(self, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        return bytes(NONCE_SIZE), plaintext + _TAG

    def open(self, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        return sealed[: -len(_TAG)]


def make_bodies(records: int, tags: int, seed: int = 1) -> list[bytes]:
    rnd = random.Random(seed)
    prefixes = ("LT", "PT", "TT", "AT", "FT")
    names = [f"{prefixes[i % 5]}-{i:04d}" for i in range(tags)]
    scales = [rnd.choice((1.0, 0.1, 0.01, 0.001)) for _ in range(tags)]
    raw = [rnd.randint(0, 30_000) for _ in range(tags)]
    out = []
    for k in range(records):
        ts = T0_MS + k * 1000
        for i in range(tags):
            raw[i] = min(65_535, max(0, raw[i] + rnd.randint(-3, 3)))
        out.append(telemetry_body([(names[i], ts, raw[i] * scales[i], None) for i in range(tags)]))
    return out


def open_store(
    directory: Path, cipher: CipherName | None, monotonic: object = time.monotonic
) -> Store:
    store = Store.open(
        path=directory / "buffer.db",
        key_file=directory / "buffer.key",
        gateway_id="bench-gw",
        cipher=cipher or "aes-256-gcm",
        capacity_bytes=1 << 40,
        reserve_bytes=0,
        monotonic=monotonic,  # type: ignore[arg-type]
    )
    if cipher is None:
        ring = store._core.keys
        real = ring.active
        plain = _PlainKey(real.id, real.cipher, real.material, real.created_ms)
        ring.active = plain
        ring._keys[plain.id] = plain
    return store


@dataclass(slots=True)
class Result:
    append_s: float
    drain_s: float
    disk_bytes: int
    readings: int
    syncs: int = 0
    ledger_writes: int = 0


def run_once(
    bodies: list[bytes], per_record: int, cipher: CipherName | None, sync_every: int | None
) -> Result:
    with tempfile.TemporaryDirectory(prefix="bench-buffer-", dir=_bench_dir()) as tmp:
        directory = Path(tmp)
        store = open_store(directory, cipher)
        syncs0, ledger0 = store.syncs, store.ledger_writes
        t0 = time.perf_counter()
        for k, body in enumerate(bodies):
            store.append(Stream.TELEMETRY, [body], created_ms=T0_MS + k * 1000)
            if sync_every is not None and (k + 1) % sync_every == 0:
                store._core.sync()
        t1 = time.perf_counter()
        syncs, ledger = store.syncs - syncs0, store.ledger_writes - ledger0
        while batch := store.lease(max_count=100, max_bytes=64 << 20):
            store.settle(accepted=[(r.stream, r.seq) for r in batch])
        t2 = time.perf_counter()
        store.close()
        db = directory / "buffer.db"
        if cipher is None:
            _check_plaintext(db, bodies[0])
        return Result(t1 - t0, t2 - t1, db.stat().st_size, len(bodies) * per_record, syncs, ledger)


def _bench_dir() -> str | None:
    """Where the databases go: ``$BENCH_DIR`` (a real disk by default: /tmp here is one)."""
    return os.environ.get("BENCH_DIR")


def ledger_rate(records_per_s: int, seconds: int) -> float:
    """Ledger fsyncs per simulated second at ``records_per_s`` one-record appends."""
    now = [0.0]
    with tempfile.TemporaryDirectory(prefix="bench-ledger-", dir=_bench_dir()) as tmp:
        store = open_store(Path(tmp), "aes-256-gcm", monotonic=lambda: now[0])
        start = store.ledger_writes
        for _ in range(seconds):
            store.append(Stream.TELEMETRY, [b"r"] * records_per_s)
            now[0] += 1.0
        writes = store.ledger_writes - start
        store.close()
    return writes / seconds


def _check_plaintext(db: Path, body: bytes) -> None:
    """The baseline must really be unsealed (else the comparison is meaningless)."""
    conn = sqlite3.connect(db)
    try:
        (sealed,) = conn.execute("SELECT sealed FROM records ORDER BY id LIMIT 1").fetchone()
    finally:
        conn.close()
    assert zlib.decompress(sealed[1 : -len(_TAG)]) == body, "baseline is not plaintext"


def best(results: list[Result]) -> Result:
    return Result(
        min(r.append_s for r in results),
        min(r.drain_s for r in results),
        results[-1].disk_bytes,
        results[-1].readings,
        results[-1].syncs,
        results[-1].ledger_writes,
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} cpus; {platform.system()} {platform.release()}; "
        f"Python {platform.python_version()}; SQLite {sqlite3.sqlite_version}; "
        f"cryptography {cryptography.__version__}"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--records", type=int, default=300, help="records of --tags readings")
    ap.add_argument("--tags", type=int, default=1000, help="readings per record")
    ap.add_argument("--small-tags", type=int, default=10, help="readings per small record")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--ledger-seconds", type=int, default=600, help="simulated seconds")
    args = ap.parse_args(argv)
    big = make_bodies(args.records, args.tags)
    small_n = args.records * args.tags // args.small_tags // 10  # a tenth of the readings
    small = make_bodies(small_n, args.small_tags, seed=2)

    rows: list[tuple[str, Result, int]] = []
    for label, bodies, per in (
        (f"{args.tags}-reading records", big, args.tags),
        (f"{args.small_tags}-reading records", small, args.small_tags),
    ):
        modes: tuple[tuple[str, CipherName | None, int | None], ...] = (
            ("unsealed, no fsync (baseline)", None, None),
            ("AES-256-GCM, no fsync", "aes-256-gcm", None),
            ("AES-256-GCM, fsync every 10", "aes-256-gcm", 10),
            ("AES-256-GCM, fsync every 1", "aes-256-gcm", 1),
            ("SM4-GCM, fsync every 1", "sm4-gcm", 1),
        )
        # Repeats go round all cases in turn, so load on a shared machine hits them alike.
        runs: list[list[Result]] = [[] for _ in modes]
        for _ in range(args.repeat):
            for i, (_, cipher, every) in enumerate(modes):
                runs[i].append(run_once(bodies, per, cipher, every))
        rows += [(f"{label}, {m[0]}", best(r), per) for m, r in zip(modes, runs, strict=True)]

    print(f"machine: {machine()}")
    print(
        f"workload: {args.records} records x {args.tags} readings (1 Hz poll), plus "
        f"{small_n} records x {args.small_tags}; best of {args.repeat}"
    )
    head = (
        f"{'case':<52}{'append r/s':>13}{'x base':>8}{'drain r/s':>13}{'x base':>8}"
        f"{'B/reading':>11}{'WAL fsyncs':>12}{'ledger fsyncs':>15}"
    )
    print(head)
    print("-" * len(head))
    base: Result | None = None
    for name, res, _ in rows:
        if "baseline" in name:
            base = res
        assert base is not None
        append_rate = res.readings / res.append_s
        drain_rate = res.readings / res.drain_s
        print(
            f"{name:<52}{append_rate:>13,.0f}{base.append_s / res.append_s:>8.2f}"
            f"{drain_rate:>13,.0f}{base.drain_s / res.drain_s:>8.2f}"
            f"{res.disk_bytes / res.readings:>11.2f}{res.syncs:>12}{res.ledger_writes:>15}"
        )
    seconds = args.ledger_seconds
    per_poll = ledger_rate(1, seconds)
    per_tag = ledger_rate(args.tags, seconds)
    print(
        f"ledger fsyncs per second, {args.tags} tags at 1 Hz for {seconds} simulated s: "
        f"one record per poll {per_poll:.3f}; one record per reading {per_tag:.3f}"
    )
    aes, durable, b0 = rows[1][1], rows[3][1], rows[0][1]
    cost = aes.append_s / b0.append_s - 1
    print(
        "targets (1,000-reading records, AES-256-GCM): append with durability >= 200,000 r/s: "
        f"{durable.readings / durable.append_s:,.0f}; sealing cost <= 30 %: {cost:+.0%}; "
        f"drain >= 100,000 r/s: {aes.readings / aes.drain_s:,.0f}; "
        f"<= 16 B/reading: {aes.disk_bytes / aes.readings:.2f}; "
        f"ledger fsyncs <= 1/s: {max(per_poll, per_tag):.3f}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

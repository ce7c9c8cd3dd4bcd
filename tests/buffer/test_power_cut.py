"""Power cuts at the store level, on a real file system: an ext4 image mounted through a loop
device (as root), as STACK.md "Power loss" describes.

Each round forks a writer that appends, leases ("publishes": reported only after ``lease``
returned) and settles at random on the mounted image. The parent freezes it (SIGSTOP), copies
the image file (what reached the "disk"; dirty pages of the page cache are lost, as in a power
cut), kills it, unmounts, puts the copy back, mounts it and opens the store. Then: every
published record is there with its exact content (durable before leased); every appended one
is there with its content or inside a reported gap; no seq is ever appended twice (a later
round never reissues a seq, not even one that was rolled back).
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from buffer import Store, Stream
from tests.buffer.damage import covered

KIB = 1024


@pytest.fixture
def ext4(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    """(image file, mount point) of a 48 MiB ext4 file system mounted via a loop device."""
    image, mnt = tmp_path / "disk.img", tmp_path / "mnt"
    mnt.mkdir()
    with image.open("wb") as f:
        f.truncate(48 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True, capture_output=True)
    mount(image, mnt)
    try:
        yield image, mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False, capture_output=True)


def mount(image: Path, mnt: Path) -> None:
    done = subprocess.run(
        ["mount", "-o", "loop", str(image), str(mnt)], capture_output=True, check=False
    )
    assert done.returncode == 0, f"mount failed (run as root): {done.stderr.decode()}"


def open_store(mnt: Path) -> Store:
    return Store.open(
        path=mnt / "data" / "b.db",
        key_file=mnt / "data" / "b.key",
        gateway_id="gw",
        reserve_bytes=512 * KIB,
    )


def payload(round_no: int, counter: int) -> bytes:
    return hashlib.sha256(b"%d/%d" % (round_no, counter)).digest() * (1 + counter % 7)


def writer(mnt: Path, round_no: int, out: int) -> None:
    rng = random.Random(round_no)
    store = open_store(mnt)
    counter = 0
    while True:
        op = rng.random()
        if op < 0.6:
            stream = Stream.ALARM if rng.random() < 0.1 else rng.choice(list(Stream))
            batch = [payload(round_no, counter + i) for i in range(rng.randint(1, 20))]
            counter += len(batch)
            seqs = store.append(stream, batch)
            lines = [f"A {int(stream)} {q} {p.hex()}\n" for q, p in zip(seqs, batch, strict=True)]
            os.write(out, "".join(lines).encode())
        elif op < 0.95:
            leased = store.lease(max_count=rng.randint(1, 60), max_bytes=1 << 20)
            os.write(out, "".join(f"P {int(r.stream)} {r.seq}\n" for r in leased).encode())
            store.settle(accepted=[(r.stream, r.seq) for r in leased if rng.random() < 0.8])
        else:
            store.release_all()


def cut_power(image: Path, mnt: Path, round_no: int, stop_after: int) -> list[str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            writer(mnt, round_no, w)
        finally:
            os._exit(1)
    os.close(w)
    lines: list[str] = []
    snapshot = image.with_name("snapshot.img")
    with os.fdopen(r) as reader:
        while len(lines) < stop_after:
            line = reader.readline()
            if not line:
                break
            lines.append(line)
        os.kill(pid, signal.SIGSTOP)
        shutil.copyfile(image, snapshot)  # what reached the disk at the moment of the cut
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status), f"round {round_no}: the writer died on its own ({status})"
        lines.extend(reader.readlines())
    subprocess.run(["umount", str(mnt)], check=True, capture_output=True)
    snapshot.replace(image)
    mount(image, mnt)
    return lines


def run_rounds(image: Path, mnt: Path, rounds: int) -> None:
    rng = random.Random(4242)
    appended: dict[tuple[int, int], bytes] = {}
    published: set[tuple[int, int]] = set()
    for round_no in range(rounds):
        for line in cut_power(image, mnt, round_no, rng.randint(50, 400)):
            kind, *rest = line.split()
            key = (int(rest[0]), int(rest[1]))
            if kind == "A":
                assert key not in appended, f"round {round_no}: seq reissued: {key}"
                appended[key] = bytes.fromhex(rest[2])
            else:
                published.add(key)
        with open_store(mnt) as store:
            assert store.recovered_from is None
            for stream in Stream:
                last = store.stats().streams[stream].last_seq
                got = {r.seq: r.payload for r in store.resend(stream, 1, last)}
                for (s, seq), data in appended.items():
                    if s != stream:
                        continue
                    if (s, seq) in published:
                        assert got.get(seq) == data, f"round {round_no}: published {s}/{seq} lost"
                    elif seq in got:
                        assert got[seq] == data, f"round {round_no}: {s}/{seq} changed"
                assert covered(store, stream, set(got), last) == []
    assert published, "the test published nothing"


@pytest.mark.integration
def test_power_cuts_never_reissue_a_seq_nor_lose_a_published_record(
    ext4: tuple[Path, Path],
) -> None:
    run_rounds(*ext4, rounds=5)


@pytest.mark.slow
@pytest.mark.soak
@pytest.mark.integration
@pytest.mark.timeout(600)
def test_twenty_power_cuts(ext4: tuple[Path, Path]) -> None:
    run_rounds(*ext4, rounds=20)

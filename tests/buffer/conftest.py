"""Fixtures for the buffer tests: an injected clock and a store factory on a temp directory."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from buffer import Store

T0_MS = 1_700_000_000_000


class Clock:
    """Manual clock in UTC epoch ms; tests move it, nothing sleeps."""

    def __init__(self, now_ms: int = T0_MS) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms

    def advance(self, ms: int) -> None:
        self.now_ms += ms


OpenStore = Callable[..., Store]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def open_store(tmp_path: Path, clock: Clock) -> Iterator[OpenStore]:
    """``open_store(**overrides)`` opens the store at tmp_path/data/buffer.db; all are closed
    at teardown (closing twice is allowed)."""
    stores: list[Store] = []

    def make(**overrides: Any) -> Store:
        kwargs: dict[str, Any] = {
            "path": tmp_path / "data" / "buffer.db",
            "key_file": tmp_path / "secrets" / "buffer.key",
            "gateway_id": "gw-01",
            "clock_ms": clock,
        }
        kwargs.update(overrides)
        store = Store.open(**kwargs)
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close()

"""Review test fixtures: a real buffer (Store) under tmp_path and an agent config pointing at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from buffer import Store
from tests.agent.review.site import Site

GW = "GW1"


@pytest.fixture
def store_paths(tmp_path: Path) -> dict[str, Path]:
    return {"path": tmp_path / "data" / "buffer.db", "key_file": tmp_path / "data" / "buffer.key"}


@pytest.fixture
def make_store(store_paths: dict[str, Path]) -> Iterator[Callable[[], Store]]:
    opened: list[Store] = []

    def make() -> Store:
        store = Store.open(**store_paths, gateway_id=GW)
        opened.append(store)
        return store

    yield make
    for s in opened:
        s.close()


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The engine-made site history (built once per test session: about 2 s)."""
    return Site(tmp_path_factory.mktemp("site"))

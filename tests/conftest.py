"""Shared fixtures: a real Mosquitto per test (see tests/support/mosquitto.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from tests.support.mosquitto import Broker, BrokerError, Mode

BrokerFactory = Callable[..., Broker]


@pytest.fixture
def make_broker(tmp_path: Path) -> Iterator[BrokerFactory]:
    """``make_broker(mode=..., users=..., acl=...)`` → a started Broker, stopped at teardown.

    A missing or failing Mosquitto fails the test with the reason (never a silent skip).
    """
    brokers: list[Broker] = []

    def make(
        *,
        mode: Mode = "anonymous",
        users: Mapping[str, str] | None = None,
        acl: Sequence[str] | None = None,
        **options: Any,
    ) -> Broker:
        try:
            broker = Broker(
                tmp_path / f"broker{len(brokers)}", mode=mode, users=users, acl=acl, **options
            )
            brokers.append(broker)
            broker.start()
        except BrokerError as exc:
            pytest.fail(str(exc))
        return broker

    yield make
    for broker in brokers:
        broker.kill()


@pytest.fixture
def broker(make_broker: BrokerFactory) -> Broker:
    """An anonymous broker on a free loopback port."""
    return make_broker()

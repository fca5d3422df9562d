"""The fault suite on each broker: Redis (its own durable redis-server) and RabbitMQ (durable queues,
the machine's broker on a vhost of this run's own). One stack per broker: pytest runs every scenario
of one broker before it starts the other's (`-k redis-` or `-k rabbitmq-` picks one)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.scenarios import SCENARIOS, FaultStack, fault_stack, run_scenario

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def faults(request: pytest.FixtureRequest) -> Iterator[FaultStack]:
    yield from fault_stack(request.param)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(faults: FaultStack, scenario: str) -> None:
    run_scenario(faults, scenario)

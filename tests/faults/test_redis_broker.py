"""The fault suite on a Redis broker (its own durable redis-server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faults.scenarios import SCENARIOS, FaultStack, fault_stack, run_scenario

pytestmark = pytest.mark.faults


@pytest.fixture(scope="module")
def faults() -> Iterator[FaultStack]:
    yield from fault_stack("redis")


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_scenario(faults: FaultStack, scenario: str) -> None:
    run_scenario(faults, scenario)

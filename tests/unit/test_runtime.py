"""app/ops/runtime.py: the cyclic collector's settings in our long-running processes."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.ops.runtime import tune_gc


@pytest.fixture
def gc_restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_started_objects_are_frozen_and_collections_rarer(gc_restored: None) -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 1000  # this process's modules and objects, out of every scan


def test_zero_keeps_pythons_defaults(gc_restored: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0

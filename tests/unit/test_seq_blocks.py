"""How large the next MongoDB seq block is: OpenIM's size, doubled while blocks run out fast."""

from __future__ import annotations

from app.config import settings
from app.seq_lua import FAST_BLOCK_MS, next_block_extra

CAP = 50 * settings.seq_block_growth_max


def test_unknown_previous_block_gets_openims_size() -> None:
    assert next_block_extra(50, 0, 0, 1_000_000) == 50


def test_a_block_used_up_fast_doubles_the_next_up_to_the_cap() -> None:
    assert next_block_extra(50, 50, 1_000_000, 1_000_500) == min(100, CAP)
    assert next_block_extra(50, 400, 1_000_000, 1_000_500) == min(800, CAP)
    assert next_block_extra(50, CAP, 1_000_000, 1_000_500) == CAP


def test_a_block_that_lasted_halves_the_next_down_to_the_base() -> None:
    assert next_block_extra(50, 800, 1_000_000, 1_000_000 + FAST_BLOCK_MS) == 400
    assert next_block_extra(50, 60, 1_000_000, 1_000_000 + FAST_BLOCK_MS) == 50

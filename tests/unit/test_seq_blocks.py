"""How large the next MongoDB seq block is: OpenIM's size, doubled while blocks run out fast."""

from __future__ import annotations

import os

from app.config import settings
from app.seq_lua import FAST_BLOCK_MS, new_owner, next_block_extra

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


def test_lock_owner_ids_are_unique_and_a_forked_child_draws_its_own_prefix() -> None:
    parent = [new_owner() for _ in range(1000)]
    assert len(set(parent)) == 1000
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what its allocator would use
        os.write(write_end, new_owner().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 100).decode()
    assert child not in parent and child[:16] != parent[0][:16]

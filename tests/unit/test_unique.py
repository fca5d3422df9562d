"""Process-unique ids (the seq allocator's lock owners): unique, and new ones in a forked child."""

from __future__ import annotations

import os

from app.core.unique import ProcessUnique


def test_ids_are_unique_and_a_forked_child_draws_its_own_prefix() -> None:
    ids = ProcessUnique()
    parent = [ids.new() for _ in range(1000)]
    assert len(set(parent)) == 1000
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would use next
        os.write(write_end, ids.new().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read_end, 100).decode()
    assert child not in parent and child[:16] != parent[0][:16]


def test_ids_are_letters_and_digits_only() -> None:
    ids = ProcessUnique()
    assert all(ids.new().isalnum() for _ in range(50))
    assert len(ids.new()) >= 17

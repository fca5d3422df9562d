"""Ids unique among every process of the deployment without a system call each."""

from __future__ import annotations

import itertools
import os
import uuid


class ProcessUnique:
    """A random prefix per process (drawn again in a forked child, which would otherwise repeat its
    parent's ids) and a counter. A uuid4 per id was one getrandom system call each (strace: ten per
    transfer task for the seq allocator's lock owners alone)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = uuid.uuid4().hex[:16]
        self._count = itertools.count()

    def new(self) -> str:
        return f"{self._prefix}{next(self._count):x}"

"""P4 as a model: a seq is never reused or lowered, even after Redis loses the allocator's keys.

A Hypothesis state machine drives several SeqAllocators over one conversation against the real Redis
and the MongoDB-wire server, interleaving allocations with what goes wrong in production: Redis losing
the malloc key, an allocator crashing while it holds the lock, another allocator elsewhere reserving a
block straight from MongoDB, and concurrent allocators. A second test runs separate OS processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test

from app.seq_lua import SeqAllocator
from app.store.mongo import client as mongo
from app.store.mongo import seq_blocks
from app.store.redis import cache

ROOT = Path(__file__).resolve().parents[2]
ALLOCATORS = 3
BURST_THREADS = 3
BURST_CALLS = 5
EXTERNAL = "elsewhere"  # owner of blocks reserved straight from MongoDB


def new_allocator() -> SeqAllocator:
    return SeqAllocator(cache.get_redis(), seq_blocks.take_seq_block, seq_blocks.reserved_seq_end, lock_seconds=1)


def seq_doc(conv: str) -> dict[str, Any] | None:
    return mongo.get_db().seq.find_one({"conversation_id": conv})


class SeqAllocatorMachine(RuleBasedStateMachine):
    """The model: every seq handed out so far (and by whom), and the highest one the allocators gave."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = f"si_model_{uuid.uuid4().hex}"
        self.key = cache.malloc_seq_key(self.conv)
        self.redis = cache.get_redis()
        self.allocators = [new_allocator() for _ in range(ALLOCATORS)]
        self.owner_of: dict[int, str] = {}
        self.high_water = 0  # highest seq an allocator handed out
        self.floor = 0  # MongoDB's max_seq when Redis last lost the key: the next block starts at or above it
        self.stale_locks = 0

    def record(self, who: str, start: int, size: int) -> None:
        for seq in range(start + 1, start + size + 1):
            assert seq not in self.owner_of, f"seq {seq} handed to {who} was already {self.owner_of[seq]}'s"
            self.owner_of[seq] = who

    def mongo_max(self) -> int:
        doc = seq_doc(self.conv)
        return 0 if doc is None else int(doc["max_seq"])

    @rule(i=st.integers(0, ALLOCATORS - 1), size=st.integers(1, 120), group=st.booleans())
    def allocate(self, i: int, size: int, group: bool) -> None:
        start = self.allocators[i].malloc(self.conv, size, group=group)
        # Sequential calls: the range starts above everything handed out before, and above what MongoDB
        # had reserved when Redis lost the key (the remainder of a forgotten block is never reused).
        assert start >= self.high_water, f"allocator {i} went back: start {start} <= max seq {self.high_water}"
        assert start >= self.floor, f"after Redis lost the key, start {start} is below MongoDB's {self.floor}"
        self.record(f"allocator{i}", start, size)
        self.high_water = start + size

    @rule()
    def redis_loses_the_key(self) -> None:
        self.redis.delete(self.key)  # FLUSHALL, as far as this conversation is concerned
        self.floor = self.mongo_max()

    @precondition(lambda self: self.stale_locks == 0)  # each one costs a second of waiting
    @rule(owner=st.sampled_from(["crashed-allocator", "x", "0"]))
    def allocator_crashes_holding_the_lock(self, owner: str) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key, "LOCK", owner)
        pipe.expire(self.key, 1)
        pipe.execute()
        self.stale_locks += 1

    @rule(size=st.integers(1, 300))
    def block_reserved_elsewhere(self, size: int) -> None:
        start = seq_blocks.take_seq_block(self.conv, size)
        assert start >= self.high_water, f"MongoDB reserved from {start}, below handed-out {self.high_water}"
        self.record(EXTERNAL, start, size)

    @rule(wants=st.lists(st.tuples(st.integers(1, 120), st.booleans()), min_size=15, max_size=15))
    def concurrent_burst(self, wants: list[tuple[int, bool]]) -> None:
        results: list[list[tuple[int, int]]] = [[] for _ in range(BURST_THREADS)]
        errors: list[BaseException] = []
        go = threading.Barrier(BURST_THREADS)

        def work(t: int) -> None:
            try:
                mine = new_allocator()
                go.wait(timeout=10)
                for size, group in wants[t * BURST_CALLS : (t + 1) * BURST_CALLS]:
                    results[t].append((mine.malloc(self.conv, size, group=group), size))
            except BaseException as exc:  # re-raised in the test thread below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(BURST_THREADS)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=60)
        assert not any(th.is_alive() for th in threads), "a burst thread hung"
        if errors:
            raise errors[0]
        before = self.high_water
        for t, ranges in enumerate(results):
            assert len(ranges) == BURST_CALLS
            previous_end = before
            for start, size in ranges:
                assert start >= previous_end, f"burst thread {t} went back: {ranges}"
                previous_end = start + size
                self.record(f"burst{t}", start, size)
            self.high_water = max(self.high_water, previous_end)

    @invariant()
    def mongo_is_the_source_of_truth(self) -> None:
        doc = seq_doc(self.conv)
        if doc is None:
            assert not self.owner_of
            return
        assert int(doc["min_seq"]) == 0
        if self.owner_of:
            assert int(doc["max_seq"]) >= max(self.owner_of), "a seq was handed out that MongoDB never reserved"

    @invariant()
    def cached_block_is_reserved_and_ahead(self) -> None:
        cached = self.redis.hgetall(self.key)
        if "CURR" not in cached or "LAST" not in cached:
            return
        curr, last = int(cached["CURR"]), int(cached["LAST"])
        assert curr <= last <= self.mongo_max(), f"cache {cached} claims seqs MongoDB did not reserve"
        assert curr >= self.high_water, f"cache cursor {curr} is below handed-out {self.high_water}"


def test_seq_allocator_state_machine(infra: dict[str, str]) -> None:
    mongo.ensure_indexes()
    run_state_machine_as_test(
        SeqAllocatorMachine,
        settings=settings(
            max_examples=20,
            stateful_step_count=15,
            deadline=None,
            database=None,  # no example database: a failure is not replayed from .hypothesis/
            # No shrinking: every example runs against real servers, so shrinking a failure would outlast
            # the suite's 300 s timeout. A failure still prints its (at most 15) steps.
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )


def test_processes_share_a_conversation_through_redis_loss(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    conv = f"si_model_proc_{uid}_{uuid.uuid4().hex[:8]}"
    r = cache.get_redis()
    count = 40
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.alloc_process", conv, str(count), str(seed)],
            cwd=ROOT,
            env=dict(os.environ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for seed in range(3)
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready"
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        # Each process needs at least count * 2 ms; wipe the malloc key a few times while all still run.
        wipes_mid_run = 0
        for _ in range(3):
            time.sleep(0.02)
            if all(p.poll() is None for p in procs):
                wipes_mid_run += 1
            r.delete(cache.malloc_seq_key(conv))
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert wipes_mid_run >= 2, "the processes finished before Redis lost the key"

    owner_of: dict[int, int] = {}
    for n, out in enumerate(outputs):
        ranges = json.loads(out.strip().splitlines()[-1])
        assert len(ranges) == count
        previous_end = 0
        for start, size in ranges:
            assert start >= previous_end, f"process {n} went back: {ranges}"
            previous_end = start + size
            for seq in range(start + 1, start + size + 1):
                assert seq not in owner_of, f"seq {seq} went to process {n} and process {owner_of[seq]}"
                owner_of[seq] = n
    doc = seq_doc(conv)
    assert doc is not None
    assert int(doc["min_seq"]) == 0
    assert int(doc["max_seq"]) >= max(owner_of)

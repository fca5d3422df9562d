"""The seq allocator against the real Redis and the MongoDB-wire server (no workers needed)."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial

import pytest
import redis

from app.ops import embedded
from app.seq_lua import SINGLE_BLOCK, SeqAllocator, new_seq_allocator
from app.store.mongo import client as mongo
from app.store.mongo import seq_blocks
from app.store.redis.client import get_redis
from app.store.redis.keys import malloc_seq_key
from tests.conftest import WORK_DIR
from tests.integration.helpers import eventually
from tests.redis_cluster import redis_binary


@pytest.fixture
def allocator(infra: dict[str, str]) -> SeqAllocator:
    mongo.ensure_indexes()
    return new_seq_allocator(lock_seconds=1)


def interfered_once(interfere: Callable[[str], None]) -> SeqAllocator:
    """An allocator whose first MongoDB block fetch runs `interfere(conversation id)` before taking its block."""
    pending = [True]

    def take_block(conv_id: str, size: int) -> int:
        if pending:
            pending.clear()
            interfere(conv_id)
        return seq_blocks.take_seq_block(conv_id, size)

    return new_seq_allocator(take_block, lock_seconds=1)


def seq_doc(conv: str) -> dict[str, int]:
    doc = mongo.get_db().seq.find_one({"conversation_id": conv})
    assert doc is not None
    return {"max_seq": doc["max_seq"], "min_seq": doc["min_seq"]}


def test_contiguous_ranges_from_one_block(allocator: SeqAllocator, uid: str) -> None:
    conv = f"si_a{uid}_b{uid}"
    starts = [allocator.malloc(conv, n) for n in (1, 3, 10)]
    assert starts == [0, 1, 4]
    # one MongoDB block served all three: n + 50 for the first request
    assert seq_doc(conv) == {"max_seq": 1 + SINGLE_BLOCK, "min_seq": 0}


def test_next_block_continues_the_cached_one(allocator: SeqAllocator, uid: str) -> None:
    conv = f"si_a{uid}_c{uid}"
    assert allocator.malloc(conv, 40) == 0  # block 0..90
    assert allocator.malloc(conv, 40) == 40
    assert allocator.malloc(conv, 40) == 80  # crosses the block end: the next block continues it
    assert allocator.malloc(conv, 1) == 120
    assert seq_doc(conv)["max_seq"] >= 121


def test_redis_data_loss_never_reuses_a_seq(allocator: SeqAllocator, uid: str) -> None:
    conv = f"si_a{uid}_d{uid}"
    handed_out = [allocator.malloc(conv, 5) + i + 1 for i in range(5)]
    get_redis().delete(malloc_seq_key(conv))  # what FLUSHALL does to this conversation
    start = allocator.malloc(conv, 5)
    assert start + 1 > max(handed_out)
    assert seq_doc(conv)["min_seq"] == 0  # never reset


def test_inconsistent_block_jumps_ahead(allocator: SeqAllocator, uid: str) -> None:
    conv = f"si_a{uid}_e{uid}"
    allocator.malloc(conv, 50)  # block 0..100, cached CURR 50
    seq_blocks.take_seq_block(conv, 1000)  # someone else reserved seqs in MongoDB meanwhile
    allocator.malloc(conv, 50)  # still inside the cached block
    start = allocator.malloc(conv, 10)  # needs a new block, which does not continue the cache
    assert start >= 1100


def test_stale_lock_expires_and_allocation_proceeds(allocator: SeqAllocator, uid: str) -> None:
    conv = f"si_a{uid}_f{uid}"
    allocator.malloc(conv, 1)
    key = malloc_seq_key(conv)
    r = get_redis()
    r.hset(key, "LOCK", "crashed-allocator")
    r.expire(key, 1)  # as the crashed allocator left it
    start = allocator.malloc(conv, 1)
    assert start >= 1


def test_concurrent_allocators_never_overlap(allocator: SeqAllocator, uid: str) -> None:
    conv = f"si_a{uid}_g{uid}"
    got: list[int] = []
    lock = threading.Lock()

    def work() -> None:
        mine = new_seq_allocator(lock_seconds=2)
        for _ in range(30):
            start = mine.malloc(conv, 3)
            with lock:
                got.extend(range(start + 1, start + 4))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 * 30 * 3
    assert len(set(got)) == len(got)


def test_lock_lost_mid_fetch_never_lowers_the_next_seq(infra: dict[str, str], uid: str) -> None:
    """Redis loses the key (and our lock) while we fetch a block; another allocator gets in first."""
    conv = f"si_a{uid}_h{uid}"
    r = get_redis()
    other = new_seq_allocator(lock_seconds=1)

    def redis_loses_the_key(conv_id: str) -> None:
        r.delete(malloc_seq_key(conv_id))
        other.malloc(conv_id, 5)  # MongoDB block 0..55, cache CURR 5; ours then: 55..110

    mine = interfered_once(redis_loses_the_key)
    first = mine.malloc(conv, 5)
    second = mine.malloc(conv, 5)
    assert second >= first + 5
    assert other.malloc(conv, 1) >= second + 5


def test_slow_mongodb_expiring_the_lock_never_lowers_the_next_seq(infra: dict[str, str], uid: str) -> None:
    conv = f"si_a{uid}_i{uid}"
    other = new_seq_allocator(lock_seconds=1)

    def mongodb_is_slow(conv_id: str) -> None:
        time.sleep(1.2)  # longer than lock_seconds: our lock expires
        other.malloc(conv_id, 5)

    mine = interfered_once(mongodb_is_slow)
    first = mine.malloc(conv, 5)
    second = mine.malloc(conv, 5)
    assert second >= first + 5


def test_older_block_is_not_restored_after_redis_loss(infra: dict[str, str], uid: str) -> None:
    """We fetch a block slowly; meanwhile another allocator takes and hands out a later one, then
    Redis loses the key: our older remainder must not be served."""
    conv = f"si_a{uid}_j{uid}"
    r = get_redis()
    other = new_seq_allocator(lock_seconds=1)
    handed: list[int] = []
    interfere = [True]

    def take_block_then_lose(conv_id: str, size: int) -> int:
        start = seq_blocks.take_seq_block(conv_id, size)  # ours: 0..55
        if interfere[0]:
            interfere[0] = False
            r.delete(malloc_seq_key(conv_id))
            handed.append(other.malloc(conv_id, 5) + 5)  # the later block 55..110: hands out 56..60
            r.delete(malloc_seq_key(conv_id))  # and Redis loses everything again
        return start

    mine = new_seq_allocator(take_block_then_lose, lock_seconds=1)
    mine.malloc(conv, 5)  # 1..5 from our block; storing it must be refused as stale
    assert mine.malloc(conv, 5) + 1 > max(handed)


def test_a_busy_conversation_takes_ever_larger_blocks(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    conv = f"si_a{uid}_busy{uid}"
    blocks: list[int] = []

    def take_block(conversation_id: str, size: int) -> int:
        blocks.append(size)
        return seq_blocks.take_seq_block(conversation_id, size)

    busy = new_seq_allocator(take_block)
    starts = [busy.malloc(conv, 1) for _ in range(600)]
    assert starts == list(range(600))
    # OpenIM's fixed n+50 would have cost 12 MongoDB round trips; each block used up at once doubles
    assert blocks[:4] == [1 + SINGLE_BLOCK, 1 + 2 * SINGLE_BLOCK, 1 + 4 * SINGLE_BLOCK, 1 + 8 * SINGLE_BLOCK]
    assert len(blocks) <= 5
    assert seq_doc(conv)["max_seq"] == sum(blocks)


def test_blocks_of_many_conversations_come_in_one_call(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    convs = [f"si_a{uid}_many{i}" for i in range(30)]
    seq_blocks.take_seq_block(convs[0], 100)  # one counter exists already
    calls: list[dict[str, int]] = []

    def take_blocks(sizes: dict[str, int]) -> dict[str, int]:
        calls.append(dict(sizes))
        return seq_blocks.take_seq_blocks(sizes)

    def one_by_one(conversation_id: str, size: int) -> int:
        raise AssertionError(f"{conversation_id} took its block alone")

    many = new_seq_allocator(one_by_one, take_blocks=take_blocks)
    starts = many.malloc_many([(c, 2, False) for c in convs])
    assert starts == {c: (100 if c == convs[0] else 0) for c in convs}
    assert calls == [{c: 2 + SINGLE_BLOCK for c in convs}]
    assert seq_doc(convs[1]) == {"max_seq": 2 + SINGLE_BLOCK, "min_seq": 0}
    assert seq_doc(convs[0])["max_seq"] == 100 + 2 + SINGLE_BLOCK
    assert many.malloc_many([(c, 1, False) for c in convs[:3]]) == {convs[0]: 102, convs[1]: 2, convs[2]: 2}


def test_concurrent_block_takers_never_share_a_seq(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    convs = [f"si_a{uid}_race{i}" for i in range(3)]
    ranges: list[tuple[str, int, int]] = []
    lock = threading.Lock()

    def work() -> None:
        for n in range(15):
            sizes = {c: 1 + (n % 4) for c in convs}
            taken = seq_blocks.take_seq_blocks(sizes)
            with lock:
                ranges.extend((c, start, start + sizes[c]) for c, start in taken.items())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for conv in convs:
        mine = sorted((lo, hi) for c, lo, hi in ranges if c == conv)
        assert len(mine) == 60
        assert all(prev_hi <= lo for (_, prev_hi), (lo, _) in zip(mine, mine[1:], strict=False)), "overlapping blocks"
        assert seq_doc(conv)["max_seq"] >= mine[-1][1]


@pytest.fixture
def primary_and_replica(infra: dict[str, str]) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """Two redis-servers of their own: the second a replica of the first."""
    ports = [embedded.free_port()]
    ports.append(next(port for port in iter(embedded.free_port, None) if port != ports[0]))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = WORK_DIR / f"seq-failover-{port}"
            node_dir.mkdir(parents=True)
            args = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(node_dir)]
            args += ["--save", "", "--appendonly", "no"]
            with open(node_dir / "redis.log", "ab") as log:  # the child keeps its own descriptor
                procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
            embedded.wait_until(partial(embedded.redis_answers, f"redis://127.0.0.1:{port}/0"), 20, f"redis {port}")
        primary, replica = (redis.Redis(port=port, decode_responses=True) for port in ports)
        replica.replicaof("127.0.0.1", ports[0])
        assert eventually(lambda: replica.info("replication")["master_link_status"] == "up", timeout=20)
        yield primary, replica
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def test_a_promoted_replica_never_hands_out_a_seq_again(
    primary_and_replica: tuple[redis.Redis, redis.Redis], uid: str
) -> None:
    """Replication is asynchronous: a master can hand out seqs its replica never saw, then die. The
    promoted replica's cached block is older than what was handed out; it must not be served."""
    mongo.ensure_indexes()
    primary, replica = primary_and_replica
    conv = f"si_a{uid}_promoted{uid}"

    def allocator_on(client: redis.Redis) -> SeqAllocator:
        return SeqAllocator(client, seq_blocks.take_seq_block, seq_blocks.reserved_seq_end)

    on_primary = allocator_on(primary)
    handed = [on_primary.malloc(conv, 5) + 5]
    assert primary.wait(1, 5000) == 1  # the replica holds the block: CURR 5
    replica.replicaof("NO", "ONE")  # promoted (a new replication id), while the old master goes on:
    handed += [on_primary.malloc(conv, 5) + 5 for _ in range(3)]  # 6..20, which the replica never sees
    assert int(replica.hget(malloc_seq_key(conv), "CURR") or 0) == 5

    start = allocator_on(replica).malloc(conv, 5)
    assert start + 1 > max(handed), f"seq {start + 1} handed out again after the failover"
    assert allocator_on(replica).malloc(conv, 1) == start + 5  # the new block serves as usual


def test_a_probing_allocation_gives_seqs_only_to_unrecorded_ids_of_prepared_conversations(
    allocator: SeqAllocator, uid: str
) -> None:
    r = get_redis()
    ready, fresh, repeats = (f"si_a{uid}_p{uid}", f"si_a{uid}_q{uid}", f"si_a{uid}_r{uid}")

    def recorded(conv: str) -> str:
        return f"RECORDED:{{{conv}}}"

    def flag(conv: str) -> str:
        return f"FLAG:{{{conv}}}"

    try:
        for conv in (ready, repeats):
            r.set(flag(conv), 1)
        allocator.malloc(ready, 3)  # seqs 1..3 handed out before
        r.hset(recorded(ready), mapping={"c1": 2})
        r.hset(recorded(repeats), mapping={"d1": 7, "d2": 8})
        probed = allocator.malloc_unrecorded_many(
            [(ready, ["c0", "c1", "c2", "c0"], False), (fresh, ["e0"], False), (repeats, ["d1", "d2", "d1"], True)],
            recorded,
            flag,
        )
        # two distinct unrecorded ids: seqs 4 and 5; c1 keeps its 2
        assert (probed[ready].known, probed[ready].flagged, probed[ready].start) == (
            [None, "2", None, None],
            True,
            3,
        )
        # no flag: nothing allocated (the caller creates what it stands for first)
        assert (probed[fresh].known, probed[fresh].flagged, probed[fresh].start) == ([None], False, None)
        assert not r.exists(malloc_seq_key(fresh))
        # every id recorded: nothing allocated, the cached block untouched
        assert (probed[repeats].known, probed[repeats].start) == (["7", "8", "7"], None)
        assert not r.exists(malloc_seq_key(repeats))
        assert allocator.malloc(ready, 1) == 5
    finally:
        r.delete(*(key(conv) for conv in (ready, fresh, repeats) for key in (recorded, flag)))


def test_a_probing_allocation_takes_a_block_for_a_new_cache_and_many_ids(allocator: SeqAllocator, uid: str) -> None:
    r = get_redis()
    conv = f"si_a{uid}_s{uid}"
    ids = [f"id{n}" for n in range(1200)]  # more than one HMGET chunk in the script
    try:
        r.set(f"FLAG:{{{conv}}}", 1)
        r.hset(f"RECORDED:{{{conv}}}", "id700", 1)
        probed = allocator.malloc_unrecorded_many(
            [(conv, ids, False)], lambda c: f"RECORDED:{{{c}}}", lambda c: f"FLAG:{{{c}}}"
        )
        assert probed[conv].start == 0 and probed[conv].known.count(None) == 1199
        assert probed[conv].known[700] == "1"
        assert allocator.malloc(conv, 1) == 1199  # the block from MongoDB served 1,199 seqs
    finally:
        r.delete(f"FLAG:{{{conv}}}", f"RECORDED:{{{conv}}}")


def counting_allocator() -> tuple[SeqAllocator, list[tuple[str, int]]]:
    """An allocator that records every MongoDB block it takes, one conversation at a time."""
    taken: list[tuple[str, int]] = []

    def take_block(conv_id: str, size: int) -> int:
        taken.append((conv_id, size))
        return seq_blocks.take_seq_block(conv_id, size)

    return new_seq_allocator(take_block, lock_seconds=1), taken


def test_a_block_running_low_gets_its_successor_ahead_and_continues_into_it(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    allocator, taken = counting_allocator()
    conv = f"si_a{uid}_n{uid}"
    assert allocator.malloc(conv, 1) == 0  # block 0..51
    assert allocator.reserve_ahead() == 0  # 50 seqs left: not low yet
    assert allocator.malloc(conv, 10) == 1  # 40 left: fewer than a base block
    assert allocator.reserve_ahead() == 1
    assert allocator.reserve_ahead() == 0  # asked once
    ahead = get_redis().hgetall(malloc_seq_key(conv))
    assert int(ahead["NEXT_CURR"]) == 51 and int(ahead["NEXT_LAST"]) > 51
    assert len(taken) == 2  # the first block, and the one ahead
    # the cached block's 40 and 30 of the block ahead: one range across both, no MongoDB on the way
    assert allocator.malloc(conv, 70) == 11
    assert len(taken) == 2
    state = get_redis().hgetall(malloc_seq_key(conv))
    assert int(state["CURR"]) == 81 and state["LAST"] == ahead["NEXT_LAST"] and "NEXT_CURR" not in state
    assert seq_doc(conv)["max_seq"] == int(ahead["NEXT_LAST"])


def test_a_block_ahead_that_does_not_follow_the_cached_one_is_skipped_to_or_refused(
    infra: dict[str, str], uid: str
) -> None:
    mongo.ensure_indexes()
    allocator, _taken = counting_allocator()
    conv = f"si_a{uid}_o{uid}"
    allocator.malloc(conv, 11)  # block 0..61, 50 left
    allocator.malloc(conv, 20)  # 30 left: low
    seq_blocks.take_seq_block(conv, 1000)  # someone reserved 61..1061 in MongoDB meanwhile
    assert allocator.reserve_ahead() == 1  # its block starts at 1061: above the cached end
    assert allocator.malloc(conv, 30) == 31  # the cached block's rest first
    assert allocator.malloc(conv, 5) == 1061  # then the block ahead, skipping what was not ours
    # a block reserved before the cached one was: never kept (it lies below what is handed out)
    r = get_redis()
    key = malloc_seq_key(conv)
    last = int(r.hget(key, "LAST") or 0)
    store_next = allocator._store_next
    assert store_next(keys=[key], args=[last - 10, last + 40, 0, 50]) == 0
    assert store_next(keys=[f"{key}:missing"], args=[last, last + 50, 0, 50]) == 0  # no cached block
    assert store_next(keys=[key], args=[last, last + 50, 0, 50]) == 1
    assert store_next(keys=[key], args=[last + 50, last + 100, 0, 50]) == 0  # one ahead is enough


def test_a_new_block_from_mongodb_drops_the_one_ahead(infra: dict[str, str], uid: str) -> None:
    """A request larger than the block ahead can give takes a newer block; the older one ahead must
    never be served after it (P4)."""
    mongo.ensure_indexes()
    allocator, _taken = counting_allocator()
    conv = f"si_a{uid}_p{uid}"
    allocator.malloc(conv, 11)
    allocator.malloc(conv, 20)  # 30 left: low
    assert allocator.reserve_ahead() == 1  # 61..111
    handed = [allocator.malloc(conv, 200)]  # more than both: a block from MongoDB, above 111
    assert handed[0] >= 111
    assert "NEXT_CURR" not in get_redis().hgetall(malloc_seq_key(conv))
    handed.append(allocator.malloc(conv, 1))
    assert handed[1] == handed[0] + 200


def test_a_promoted_replica_drops_the_block_ahead_with_the_cached_one(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    allocator, _taken = counting_allocator()
    conv = f"si_a{uid}_q{uid}"
    allocator.malloc(conv, 11)
    allocator.malloc(conv, 20)
    assert allocator.reserve_ahead() == 1
    reserved_end = seq_doc(conv)["max_seq"]
    get_redis().hset(malloc_seq_key(conv), "RID", "another-servers-replication-id")  # as after a failover
    start = allocator.malloc(conv, 1)
    assert start >= reserved_end  # from MongoDB, above the block ahead too


def test_blocks_ahead_of_many_conversations_come_in_one_mongodb_call(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    calls: list[dict[str, int]] = []

    def take_blocks(sizes: dict[str, int]) -> dict[str, int]:
        calls.append(dict(sizes))
        return seq_blocks.take_seq_blocks(sizes)

    allocator = new_seq_allocator(lock_seconds=1, take_blocks=take_blocks)
    convs = [f"si_a{uid}_r{uid}", f"si_a{uid}_s{uid}"]
    for conv in convs:
        allocator.malloc(conv, 11)
        allocator.malloc(conv, 20)  # 30 left: low
    calls.clear()
    assert allocator.reserve_ahead() == 2
    assert [sorted(c) for c in calls] == [sorted(convs)]
    for conv in convs:
        assert allocator.malloc(conv, 40) == 31  # across the cached block and the one ahead
        assert seq_doc(conv)["max_seq"] == int(get_redis().hget(malloc_seq_key(conv), "LAST") or 0)

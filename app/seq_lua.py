"""Per-conversation seq allocation: a Redis hash in front of MongoDB seq blocks.

`MALLOC_SEQ:{conv}` holds CURR (last seq handed out), LAST (end of the block reserved in MongoDB),
TIME, RID (the replication id of the server that cached the block) and, while someone is fetching a
new block, LOCK. The outcomes of the malloc script (app/store/redis/scripts/malloc_seq.lua), the
first four as in OpenIM's allocator:
  0  served from the cached block
  1  no cache (first use, expiry, Redis lost its data, or the block was cached before a replica was
     promoted: asynchronous replication can have lost its last allocations): locked, fetch a block
     from MongoDB
  2  locked by another allocator: wait briefly and retry
  3  the cached block is too small: locked, fetch the next block from MongoDB
  4  (probing, `malloc_unrecorded_many`) nothing allocated: every id already has its seq, or the
     flag key is missing
A cached block that runs low (fewer seqs left than a base block) gets its successor reserved in
MongoDB ahead of need (`reserve_ahead`, which transfer calls after each run) and kept beside it
(NEXT_CURR, NEXT_LAST, NEXT_BORN, NEXT_EXTRA): the malloc script continues into it with no MongoDB
round trip on the way of a message. Conversations that started together (a crowd after a restart,
a benchmark) otherwise run out together, and one run's MongoDB blocks for all of them held up every
shard: at 1,000 msg/s over 100 chats, push p50 0.9 s for the second it took.
MongoDB's `seq.max_seq` only ever grows, so even after Redis loses everything the next block starts
above every seq already handed out (P4): a jump forward, never reuse.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from app.config import settings
from app.core.unique import ProcessUnique
from app.store.mongo import seq_blocks
from app.store.redis import scripts
from app.store.redis.client import get_redis
from app.store.redis.keys import MALLOC_SEQ_TTL_SECONDS, malloc_seq_key

log = logging.getLogger(__name__)

# Seqs reserved beyond a request, per MongoDB round trip (OpenIM: n+100 for groups, n+50 otherwise).
GROUP_BLOCK = settings.seq_block_group
SINGLE_BLOCK = settings.seq_block_single
# A block used up within this long was too small for the conversation's pace: the next one is twice
# as large, up to SEQ_BLOCK_GROWTH_MAX times the base; one that lasted longer makes the next one half
# as large, down to the base. Busy conversations then cost MongoDB a round trip about once a minute
# instead of every 50 messages; quiet ones keep OpenIM's sizes, and what Redis losing its data skips
# (a block's unused rest, pulled as placeholders) stays bounded.
FAST_BLOCK_MS = 60_000
# conversations remembered for `reserve_ahead` at most (a process that never calls it: the baseline bench)
MAX_LOW_REMEMBERED = 100_000


# lock owners: unique among every allocator of every process
new_owner = ProcessUnique().new


def next_block_extra(base: int, previous_extra: int, previous_born_ms: int, now_ms: int) -> int:
    """Seqs to reserve beyond the request for a conversation whose cached block ran out."""
    if previous_extra <= 0 or previous_born_ms <= 0:
        return base
    if now_ms - previous_born_ms >= FAST_BLOCK_MS:
        return max(base, previous_extra // 2)
    return max(base, min(base * settings.seq_block_growth_max, previous_extra * 2))


class SeqAllocationError(RuntimeError):
    pass


NOTHING_WANTED = 4  # a probing malloc that allocated nothing (every id had its seq, or no flag)


@dataclass
class Probed:
    """A probing allocation's answer for one conversation."""

    known: list[str | None]  # per id: what the hash holds for it (its seq), or None
    flagged: bool  # whether the flag key exists
    start: int | None  # the unrecorded ids' seqs are start+1 ..; None when none needed one


BlockSource = Callable[[str, int], int]
"""(conversation_id, size) -> the max seq before MongoDB reserved `size` more."""
BlocksSource = Callable[[dict[str, int]], dict[str, int]]
"""The same for several conversations at once: {conversation_id: size} -> {conversation_id: start}."""


class SeqAllocator:
    def __init__(
        self,
        client: redis.Redis,
        take_block: BlockSource,
        newest_block_end: Callable[[str], int],
        lock_seconds: int = 3,
        data_seconds: int = MALLOC_SEQ_TTL_SECONDS,
        wait_seconds: float = 0.02,
        take_blocks: BlocksSource | None = None,
    ) -> None:
        self._redis = client
        self._take_block = take_block
        self._take_blocks = take_blocks
        self._newest_block_end = newest_block_end
        self._lock_seconds = lock_seconds
        self._data_seconds = data_seconds
        self._wait_seconds = wait_seconds
        self._malloc = scripts.load("malloc_seq", client)  # the outcomes above
        self._store = scripts.load("store_seq_block", client)
        self._store_next = scripts.load("store_next_seq_block", client)
        self._low: dict[str, bool] = {}  # conversation -> group: its cached block runs low, none ahead

    def malloc(self, conversation_id: str, size: int, group: bool = False) -> int:
        """Reserve `size` consecutive seqs; returns start, the seqs are start+1 .. start+size."""
        return self.malloc_many([(conversation_id, size, group)])[conversation_id]

    def malloc_many(self, wants: list[tuple[str, int, bool]]) -> dict[str, int]:
        """Reserve seqs for several conversations: one pipelined round trip when the cached blocks
        suffice (the common case); blocks from MongoDB and lock waits are handled per conversation."""
        if any(size <= 0 for _, size, _ in wants):
            raise ValueError("size must be positive")
        now_ms, owners, results = self._malloc_all([([malloc_seq_key(conv)], size, []) for conv, size, _ in wants])
        return self._finish(wants, owners, results, now_ms)

    def malloc_unrecorded_many(
        self, wants: list[tuple[str, list[str], bool]], recorded: Callable[[str], str], flag: Callable[[str], str]
    ) -> dict[str, Probed]:
        """For each conversation (id, ids, group): seqs for its distinct ids that the hash
        `recorded(conversation)` does not hold yet, with what it holds for each id and whether
        `flag(conversation)` exists, read in the same script (one round trip for the look and the
        allocation; the keys share the conversation's slot). Where the flag is missing nothing is
        allocated (start None): the caller prepares what the flag stands for, then calls `malloc_many`."""
        if any(not ids for _, ids, _ in wants):
            raise ValueError("no ids")
        calls = [([malloc_seq_key(conv), recorded(conv), flag(conv)], 0, ids) for conv, ids, _ in wants]
        now_ms, owners, replies = self._malloc_all(calls)
        probed: dict[str, Probed] = {}
        sized: list[tuple[str, int, bool]] = []
        allocating: list[tuple[str, Any]] = []
        for (conv, ids, group), owner, (result, flagged, known) in zip(wants, owners, replies, strict=True):
            probed[conv] = Probed(list(known), bool(flagged), None)
            if int(result[0]) != NOTHING_WANTED:
                sized.append((conv, len({i for i, k in zip(ids, known, strict=True) if k is None}), group))
                allocating.append((owner, result))
        starts = self._finish(sized, [o for o, _ in allocating], [r for _, r in allocating], now_ms)
        for conv, start in starts.items():
            probed[conv].start = start
        return probed

    def _malloc_all(self, calls: list[tuple[list[str], int, list[str]]]) -> tuple[int, list[str], list[Any]]:
        """malloc_seq.lua once per (keys, size, ids) in one pipelined round trip: (now ms, the lock
        owners, the answers)."""
        if len({keys[0] for keys, _, _ in calls}) != len(calls):
            raise ValueError("one request per conversation")
        now_ms = int(time.time() * 1000)
        owners = [new_owner() for _ in calls]
        pipe = scripts.pipeline(self._redis)  # only malloc_seq.lua: none ran on NOSCRIPT
        for (keys, size, ids), owner in zip(calls, owners, strict=True):
            args: list[int | str] = [size, self._lock_seconds, self._data_seconds, now_ms, owner, *ids]
            scripts.call(self._malloc, keys, args, pipe)
        return now_ms, owners, pipe.execute()

    def _finish(
        self, wants: list[tuple[str, int, bool]], owners: list[str], results: list[Any], now_ms: int
    ) -> dict[str, int]:
        """The starts of `wants` from their malloc answers: MongoDB blocks and lock waits as needed."""
        taken = self._take_wanted_blocks(wants, results, now_ms)
        return {
            conv: self._settle(conv, size, group, owner, now_ms, result, taken.get(conv))
            for (conv, size, group), owner, result in zip(wants, owners, results, strict=True)
        }

    def _block_extra(self, group: bool, result: Any, now_ms: int) -> int:
        """Seqs beyond the request for a malloc answer of state 1 (no cache) or 3 (block used up)."""
        base = GROUP_BLOCK if group else SINGLE_BLOCK
        if int(result[0]) == 1:
            return base
        return next_block_extra(base, int(result[4]), int(result[3]), now_ms)

    def _take_wanted_blocks(
        self, wants: list[tuple[str, int, bool]], results: list[Any], now_ms: int
    ) -> dict[str, int]:
        """Every conversation whose answer asks for a MongoDB block gets it in one call (new
        conversations come in crowds: a batch's worth each costing MongoDB round trips of its own
        would hold up the whole shard)."""
        sizes = {
            conv: size + self._block_extra(group, result, now_ms)
            for (conv, size, group), result in zip(wants, results, strict=True)
            if int(result[0]) in (1, 3)
        }
        return self._blocks_in_one_call(sizes)

    def _blocks_in_one_call(self, sizes: dict[str, int]) -> dict[str, int]:
        """The starts of several conversations' MongoDB blocks from one call, where this allocator
        takes them so (else none: each is taken on its own)."""
        if self._take_blocks is None or len(sizes) < 2:
            return {}
        return self._take_blocks(sizes)

    def _run_malloc(self, conv: str, size: int, owner: str, now_ms: int, client: Any = None) -> Any:
        args: list[int | str] = [size, self._lock_seconds, self._data_seconds, now_ms, owner]
        return self._malloc(keys=[malloc_seq_key(conv)], args=args, client=client)

    def _settle(
        self, conv: str, size: int, group: bool, owner: str, now_ms: int, result: Any, taken: int | None = None
    ) -> int:
        """Finish one allocation from the malloc script's answer (`taken`: its block, already reserved)."""
        # A crashed allocator's lock expires after lock_seconds; wait a little longer than that.
        deadline = time.monotonic() + self._lock_seconds + 2
        while True:
            state = int(result[0])
            if state == 0:
                self._note_low(conv, group, size, result)
                return int(result[1])
            if state in (1, 3):
                extra = self._block_extra(group, result, now_ms)
                block = size + extra
                start = taken if taken is not None else self._take_block(conv, block)
                if state == 3:
                    curr, last = int(result[1]), int(result[2])
                    if start == last:
                        # MongoDB's block continues the cached one: keep using the cached remainder.
                        self._store_block(conv, owner, curr + size, start + block, now_ms, extra)
                        return curr
                    log.warning(
                        "seq block for %s does not continue the cache (cached last %d, mongo %d): jumping ahead",
                        conv,
                        last,
                        start,
                    )
                self._store_block(conv, owner, start + size, start + block, now_ms, extra)
                return start
            if time.monotonic() > deadline:
                raise SeqAllocationError(f"seq allocator for {conv} stayed locked")
            time.sleep(self._wait_seconds)
            owner = new_owner()
            now_ms = int(time.time() * 1000)
            result = self._run_malloc(conv, size, owner, now_ms)

    def _note_low(self, conv: str, group: bool, size: int, result: Any) -> None:
        """Remember a conversation whose cached block has fewer seqs left than a base block and no
        block reserved ahead (the malloc answer's fourth field), for `reserve_ahead`."""
        if len(result) < 4 or int(result[3]) or len(self._low) >= MAX_LOW_REMEMBERED:
            return
        if int(result[2]) - int(result[1]) - size < (GROUP_BLOCK if group else SINGLE_BLOCK):
            self._low[conv] = group

    def reserve_ahead(self) -> int:
        """Reserve in MongoDB the next block of every conversation whose cached block ran low since
        the last call, and keep it beside the cached one; returns how many were kept. A block that
        is not kept (the cache moved on meanwhile) is a gap in MongoDB's numbering, never a reuse."""
        low, self._low = self._low, {}
        if not low:
            return 0
        convs = list(low)
        pipe = self._redis.pipeline(transaction=False)
        for conv in convs:
            pipe.hmget(malloc_seq_key(conv), "BORN", "EXTRA")
        now_ms = int(time.time() * 1000)
        sizes: dict[str, int] = {}
        for conv, (born, extra) in zip(convs, pipe.execute(), strict=True):
            base = GROUP_BLOCK if low[conv] else SINGLE_BLOCK
            sizes[conv] = next_block_extra(base, int(extra or 0), int(born or 0), now_ms)
        starts = self._blocks_in_one_call(sizes)
        store = scripts.pipeline(self._redis)  # only store_next_seq_block.lua: none ran on NOSCRIPT
        for conv in convs:
            size = sizes[conv]
            start = starts[conv] if conv in starts else self._take_block(conv, size)
            scripts.call(self._store_next, [malloc_seq_key(conv)], [start, start + size, now_ms, size], store)
        return sum(int(kept) for kept in store.execute())

    def _store_block(self, conv: str, owner: str, curr: int, last: int, now_ms: int, extra: int) -> None:
        key = malloc_seq_key(conv)
        state = int(self._store(keys=[key], args=[owner, self._data_seconds, curr, last, now_ms, extra]))
        if state == 0:
            return
        # Our lock expired while we fetched the block (a slow MongoDB, or Redis lost the key).
        # Our seqs stay unique: they came from our own MongoDB block.
        log.warning("seq lock on %s was lost before storing the block", key)
        if state == 1 and self._newest_block_end(conv) > last:
            # Someone reserved a later block in MongoDB meanwhile (and may have handed it out before
            # Redis lost it): do not serve our older remainder; the next call starts from MongoDB.
            self._redis.delete(key)


def new_seq_allocator(
    take_block: BlockSource = seq_blocks.take_seq_block,
    *,
    lock_seconds: int = 3,
    take_blocks: BlocksSource | None = None,
) -> SeqAllocator:
    """An allocator on the data Redis in front of MongoDB's seq blocks (tests pass their own
    `take_block` to interfere mid-fetch)."""
    return SeqAllocator(
        get_redis(), take_block, seq_blocks.reserved_seq_end, lock_seconds=lock_seconds, take_blocks=take_blocks
    )


_allocator: SeqAllocator | None = None


def seq_allocator() -> SeqAllocator:
    """The process's allocator (transfer's, and the benches measuring it): blocks of many
    conversations come from MongoDB in one call."""
    global _allocator
    if _allocator is None:
        _allocator = new_seq_allocator(take_blocks=seq_blocks.take_seq_blocks)
    return _allocator

"""One OS process allocating seqs for a conversation, for the multi-process allocator test.

Run as `python -m tests.alloc_process CONV COUNT SEED` from the project root with REDIS_URL and
MONGO_URL in the environment. It prints `ready`, waits for one line on stdin (the start signal), makes
COUNT allocations of random size 1..30 (random single/group blocks, a few ms apart so the parent can
interfere mid-run), then prints one JSON line: [[start, size], ...] in the order the calls returned.
"""

from __future__ import annotations

import json
import random
import sys
import time

from app.seq_lua import SeqAllocator
from app.store.mongo import client as mongo
from app.store.mongo import seq_blocks
from app.store.redis import cache


def main(argv: list[str]) -> int:
    conv, count, seed = argv[0], int(argv[1]), int(argv[2])
    rng = random.Random(seed)
    allocator = SeqAllocator(cache.get_redis(), seq_blocks.take_seq_block, seq_blocks.reserved_seq_end, lock_seconds=1)
    # Open both connections before the start signal so the processes really run side by side.
    cache.get_redis().ping()
    mongo.ping()
    print("ready", flush=True)
    sys.stdin.readline()
    ranges: list[list[int]] = []
    for _ in range(count):
        size = rng.randint(1, 30)
        start = allocator.malloc(conv, size, group=rng.random() < 0.5)
        ranges.append([start, size])
        time.sleep(rng.uniform(0.002, 0.008))
    print(json.dumps(ranges), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

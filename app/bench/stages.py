"""`python -m app bench ...`: figures for the stages, printed, never asserted.

  allocator  seqs/s from the seq allocator (Redis Lua + MongoDB blocks) for batch sizes 1, 10, 100,
             one conversation at a time and pipelined over many conversations (as transfer does)
  transfer   messages/s through the running transfer workers, queue to cache: synthetic batches
             are published to the transfer queues and timed until their max seqs are visible; once
             with the whole pipeline consuming, once with persist, push and offline paused
  persist    messages/s into MongoDB's slot documents for 1, 10 and 1,000 conversations
  pull       p50/p99 latency of reading 100 messages from the Redis cache and from MongoDB
Both use the configured REDIS_URL / MONGO_URL / BROKER_URL (start the stack first for `transfer`).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from app.bench.e2e.watch import ProcessWatch, QueueDepth, discover_stack
from app.celery_app import celery_app
from app.config import settings
from app.core.conversation import shard_of, single_conversation_id, transfer_queue
from app.seq_lua import seq_allocator
from app.store.mongo import client as mongo
from app.store.mongo import messages as msg_store
from app.store.mongo import seq_blocks
from app.store.redis import msg_cache
from app.store.redis.client import get_redis
from app.store.redis.keys import msg_cache_key
from app.ws.publish import publish_docs


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=False)]
    print(f"\n{title}")
    print("  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True)))
    for row in rows:
        print("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


def bench_allocator(calls: int = 2000) -> list[dict[str, Any]]:
    mongo.ensure_indexes()
    allocator = seq_allocator()  # transfer's: blocks of many conversations in one MongoDB call
    tag = uuid.uuid4().hex[:8]
    results: list[dict[str, Any]] = []
    start = time.perf_counter()
    for i in range(50):
        seq_blocks.take_seq_block(f"si_benchblock{tag}_{i}", 50)
    block_ms = (time.perf_counter() - start) / 50 * 1000
    print(f"MongoDB block reservation (findAndModify $inc): {block_ms:.2f} ms each")
    for size in (1, 10, 100):
        convs = [f"si_bench{tag}_{size}_{i}" for i in range(50)]
        for conv in convs:  # warm: the first call of a conversation always reserves a block
            allocator.malloc(conv, size)
        start = time.perf_counter()
        for i in range(calls):
            allocator.malloc(convs[i % len(convs)], size)
        elapsed = time.perf_counter() - start
        results.append(
            {
                "mode": "one call per conversation",
                "batch": size,
                "calls_per_s": calls / elapsed,
                "seqs_per_s": calls * size / elapsed,
            }
        )
    for size in (1, 10, 100):
        convs = [f"si_benchp{tag}_{size}_{i}" for i in range(100)]
        allocator.malloc_many([(c, size, False) for c in convs])
        rounds = max(1, calls // 100)
        start = time.perf_counter()
        for _ in range(rounds):
            allocator.malloc_many([(c, size, False) for c in convs])
        elapsed = time.perf_counter() - start
        results.append(
            {
                "mode": "pipelined, 100 conversations",
                "batch": size,
                "calls_per_s": rounds * 100 / elapsed,
                "seqs_per_s": rounds * 100 * size / elapsed,
            }
        )
    _table(
        "seq allocator",
        ["mode", "seqs per call", "calls/s", "seqs/s"],
        [[r["mode"], str(r["batch"]), f"{r['calls_per_s']:,.0f}", f"{r['seqs_per_s']:,.0f}"] for r in results],
    )
    return results


def _synthetic(sender: str, receiver: str, i: int, now_ms: int) -> dict[str, Any]:
    return {
        "send_id": sender,
        "recv_id": receiver,
        "group_id": "",
        "client_msg_id": f"{sender}-{i}",
        "server_msg_id": uuid.uuid4().hex,
        "sender_platform_id": 7,
        "sender_nickname": "",
        "sender_face_url": "",
        "session_type": 1,
        "msg_from": 100,
        "content_type": 101,
        "content": json.dumps({"content": f"bench {i}"}),
        "seq": 0,
        "send_time": now_ms,
        "create_time": now_ms,
        "status": 1,
        "is_read": False,
        "options": {},
        "offline_push": None,
        "at_user_id_list": [],
        "attached_info": "",
        "ex": "",
    }


DOWNSTREAM_QUEUES = ("persist", "push", "offline")


@contextmanager
def downstream_paused() -> Iterator[dict[str, list[str]]]:
    """Stop the persist, push and offline workers consuming (Celery remote control), and start them
    again afterwards, on exactly the workers that consumed each queue before."""
    replies = celery_app.control.inspect(timeout=2).active_queues() or {}
    consumers = {
        queue: sorted(worker for worker, queues in replies.items() if any(q["name"] == queue for q in queues))
        for queue in DOWNSTREAM_QUEUES
    }
    for queue, workers in consumers.items():
        if workers:
            celery_app.control.cancel_consumer(queue, destination=workers, reply=True)
    try:
        yield consumers
    finally:
        for queue, workers in consumers.items():
            if workers:
                celery_app.control.add_consumer(queue, destination=workers, reply=True)


def _transfer_run(messages: int, conversations: int, batch: int, watch: ProcessWatch | None) -> dict[str, Any]:
    """Publish synthetic batches for new conversations and time them until every max seq is visible."""
    tag = uuid.uuid4().hex[:8]
    pairs = [(f"bs{tag}-{i}", f"br{tag}-{i}") for i in range(conversations)]
    per_conv = messages // conversations
    now_ms = int(time.time() * 1000)
    by_shard: dict[int, list[dict[str, Any]]] = {}
    for i in range(per_conv):
        for sender, receiver in pairs:
            conv = single_conversation_id(sender, receiver)
            by_shard.setdefault(shard_of(conv, settings.transfer_shards), []).append(
                _synthetic(sender, receiver, i, now_ms)
            )
    convs = [single_conversation_id(a, b) for a, b in pairs]
    if watch:
        watch.start()
    start = time.perf_counter()
    published = 0
    for shard, docs in by_shard.items():
        for offset in range(0, len(docs), batch):
            # as the gateway publishes: journaled first on a Redis broker
            publish_docs(transfer_queue(shard), docs[offset : offset + batch])
            published += 1
    publish_s = time.perf_counter() - start
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        seqs = msg_cache.get_visible_max_seqs(convs)
        if all((s or 0) >= per_conv for s in seqs.values()):
            break
        time.sleep(0.05)
    else:
        raise SystemExit("the transfer workers did not commit everything within 300 s: is the stack running?")
    elapsed = time.perf_counter() - start
    cpu = {}
    if watch:
        watch.sample()
        cpu = {row["name"]: row["cpu_s"] for row in watch.summary()}
    total = per_conv * conversations
    return {
        "messages": total,
        "batches": published,
        "publish_s": publish_s,
        "elapsed_s": elapsed,
        "msgs_per_s": total / elapsed,
        "cpu_s": cpu,
    }


def bench_transfer(messages: int = 20000, conversations: int = 200, batch: int = 200) -> list[dict[str, Any]]:
    """Two runs, every conversation new: with the whole pipeline consuming (persist, push and
    offline share the two cores with transfer), then with those three paused, transfer alone."""
    depth = QueueDepth(
        settings.effective_broker_url,
        [*(transfer_queue(k) for k in range(settings.transfer_shards)), *DOWNSTREAM_QUEUES],
    )
    roles = discover_stack(settings.redis_url, settings.mongo_url)
    results: list[dict[str, Any]] = []
    try:
        for mode in ("whole pipeline", "transfer alone"):
            depth.wait_drained(600)
            watch = ProcessWatch(roles) if roles else None
            if mode == "whole pipeline":
                run = _transfer_run(messages, conversations, batch, watch)
                waiting = depth.sample()
            else:
                with downstream_paused():
                    run = _transfer_run(messages, conversations, batch, watch)
                    waiting = depth.sample()
            # what the later stages still had to do when transfer was done: who kept up, who did not
            run["left_in_queues"] = {q: n for q, n in waiting.items() if q in DOWNSTREAM_QUEUES}
            results.append({"mode": mode, "conversations": conversations, "batch_size": batch, **run})
    finally:
        depth.close()
    rows = []
    for r in results:
        transfer_cpu = r["cpu_s"].get("worker transfer", 0.0)
        busiest = max(
            (kv for kv in r["cpu_s"].items() if kv[0] != "worker transfer"), key=lambda kv: kv[1], default=("", 0.0)
        )
        rows.append(
            [
                r["mode"],
                f"{r['messages']:,}",
                str(r["batches"]),
                f"{r['elapsed_s']:.2f}",
                f"{r['msgs_per_s']:,.0f}",
                f"{transfer_cpu:.1f}" if r["cpu_s"] else "-",
                f"{r['messages'] / transfer_cpu:,.0f}" if transfer_cpu else "-",
                f"{busiest[0]} {busiest[1]:.1f}" if busiest[0] else "-",
                " ".join(f"{q} {n}" for q, n in r["left_in_queues"].items()),
            ]
        )
    _table(
        f"transfer (queue to cache, {conversations} new conversations, batches of {batch}, "
        f"{settings.transfer_shards} shards)",
        [
            "run",
            "messages",
            "batches",
            "total s",
            "msgs/s",
            "transfer CPU s",
            "msgs per transfer CPU s",
            "busiest other, CPU s",
            "then queued",
        ],
        rows,
    )
    return results


def bench_persist(messages: int = 6000) -> list[dict[str, Any]]:
    """Messages/s into MongoDB's slot documents, as the persist worker writes them (runs per conversation)."""
    mongo.ensure_indexes()
    tag = uuid.uuid4().hex[:8]
    now_ms = int(time.time() * 1000)
    results: list[dict[str, Any]] = []
    for conversations in (1, 10, 1000):
        per_conv = max(1, messages // conversations)
        convs = [(f"ps{tag}-{conversations}-{i}", f"pr{tag}") for i in range(conversations)]
        # the batches a transfer worker would hand over: up to 200 messages, one run per conversation
        runs: list[tuple[str, list[dict[str, Any]]]] = []
        for sender, receiver in convs:
            conv = single_conversation_id(sender, receiver)
            msgs = [_synthetic(sender, receiver, i, now_ms) | {"seq": i + 1, "status": 2} for i in range(per_conv)]
            runs.extend((conv, msgs[o : o + 50]) for o in range(0, len(msgs), 50))
        batches: list[list[tuple[str, list[dict[str, Any]]]]] = [[]]
        for run in runs:  # what one persist task gets: the runs of a 200-message transfer batch
            if sum(len(m) for _, m in batches[-1]) + len(run[1]) > 200:
                batches.append([])
            batches[-1].append(run)
        start = time.perf_counter()
        for batch in batches:
            msg_store.write_runs(batch)
        elapsed = time.perf_counter() - start
        total = per_conv * conversations
        results.append(
            {"conversations": conversations, "messages": total, "elapsed_s": elapsed, "msgs_per_s": total / elapsed}
        )
    _table(
        "persist (MongoDB slot documents, 50-message runs)",
        ["conversations", "messages", "seconds", "msgs/s"],
        [
            [str(r["conversations"]), f"{r['messages']:,}", f"{r['elapsed_s']:.2f}", f"{r['msgs_per_s']:,.0f}"]
            for r in results
        ],
    )
    return results


def _percentile(samples: list[float], pct: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def bench_pull(rounds: int = 200) -> list[dict[str, Any]]:
    """Latency of reading 100 messages, from the Redis cache and from MongoDB."""
    from app.services import history

    mongo.ensure_indexes()
    tag = uuid.uuid4().hex[:8]
    sender, receiver = f"pl{tag}", f"pm{tag}"
    conv = single_conversation_id(sender, receiver)
    now_ms = int(time.time() * 1000)
    msgs = [_synthetic(sender, receiver, i, now_ms) | {"seq": i + 1, "status": 2} for i in range(150)]
    msg_store.write_msgs(conv, msgs)
    pipe = get_redis().pipeline()
    for m in msgs:
        pipe.set(msg_cache_key(conv, m["seq"]), msg_cache.encode_cached(m), ex=600)
    pipe.execute()
    seqs = list(range(51, 151))  # spans two documents
    results: list[dict[str, Any]] = []
    for source in ("cache", "mongodb"):
        if source == "mongodb":
            get_redis().delete(*[msg_cache_key(conv, s) for s in seqs])
        samples = []
        for _ in range(rounds):
            start = time.perf_counter()
            pulled = history.get_msgs(conv, seqs)
            samples.append((time.perf_counter() - start) * 1000)
            assert len(pulled) == 100 and pulled[0].seq == 51 and pulled[0].status == 2
        results.append({"source": source, "p50_ms": _percentile(samples, 50), "p99_ms": _percentile(samples, 99)})
    _table(
        "pull 100 messages",
        ["source", "p50 ms", "p99 ms"],
        [[r["source"], f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}"] for r in results],
    )
    return results

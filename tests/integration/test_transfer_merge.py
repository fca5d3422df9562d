"""The transfer worker merges the batches it holds (celery-batches): order kept, a bad batch set aside."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

from app import cache, storage
from app.bench import _synthetic
from app.celery_app import celery_app
from app.config import settings
from app.conversation import shard_of, single_conversation_id, transfer_queue
from app.tasks.persist import DEAD_LETTER_KEY as PERSIST_DEAD_LETTER_KEY
from app.tasks.transfer import DEAD_LETTER_KEY
from tests.integration.helpers import eventually, login

RAN = 'task_seconds_count{task="transfer.batch"}'


def test_queued_batches_are_merged_in_order_and_a_bad_one_is_set_aside(stack: Any, uid: str) -> None:
    sender, receiver = f"m{uid}", f"n{uid}"
    conv = single_conversation_id(sender, receiver)
    queue = transfer_queue(shard_of(conv, settings.transfer_shards))
    now = int(time.time() * 1000)
    runs_before = stack.metric("transfer", RAN)
    worker = stack.procs["transfer"]
    os.kill(worker.pid, signal.SIGSTOP)  # let 40 batches queue up behind a busy worker
    try:
        for i in range(40):
            batch = [{"client_msg_id": f"bad-{uid}"}] if i == 20 else [_synthetic(sender, receiver, i, now)]
            celery_app.send_task("transfer.batch", args=[batch], queue=queue)
    finally:
        os.kill(worker.pid, signal.SIGCONT)

    reader = login(stack, receiver)
    try:
        assert eventually(lambda: reader.newest_seqs().get(conv, 0) == 39, timeout=30)
        pulled = [m["clientMsgID"] for m in reader.pull_range(conv, 1, 39)["Msgs"]]
        assert pulled == [f"{sender}-{i}" for i in range(40) if i != 20]  # publish order, one seq each
    finally:
        reader.close()
    dead = [json.loads(entry) for entry in cache.get_redis().lrange(DEAD_LETTER_KEY, 0, -1)]
    assert [{"client_msg_id": f"bad-{uid}"}] in dead
    runs = stack.metric("transfer", RAN) - runs_before
    assert 1 <= runs < 40, f"{runs} task runs for 40 queued batches: they were not merged"
    assert stack.alive()["transfer"]


def test_a_batch_mixing_a_repeat_with_new_messages_persists_all_of_them(stack: Any, uid: str) -> None:
    """What a redelivered batch merged with newer ones looks like to the transfer stage."""
    sender, receiver = f"rep{uid}", f"new{uid}"
    conv = single_conversation_id(sender, receiver)
    queue = transfer_queue(shard_of(conv, settings.transfer_shards))
    now = int(time.time() * 1000)
    m = [_synthetic(sender, receiver, i, now) for i in range(4)]
    celery_app.send_task("transfer.batch", args=[m[:2]], queue=queue)
    assert eventually(lambda: cache.get_visible_max_seqs([conv]).get(conv) == 2)
    celery_app.send_task("transfer.batch", args=[[m[1], m[2], m[3]]], queue=queue)
    assert eventually(lambda: cache.get_visible_max_seqs([conv]).get(conv) == 4)

    def stored() -> list[str]:
        doc = storage.get_db().msg.find_one({"doc_id": f"{conv}:0"}) or {"msgs": []}
        return [slot["msg"]["client_msg_id"] for slot in doc["msgs"] if slot and slot.get("msg")]

    assert eventually(lambda: stored() == [f"{sender}-{i}" for i in range(4)], timeout=30), stored()
    refused = cache.get_redis().lrange(PERSIST_DEAD_LETTER_KEY, 0, -1)
    assert not any(conv in entry for entry in refused)

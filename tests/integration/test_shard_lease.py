"""Shard leases (Redis broker) against the real Redis: a worker stalled past its lease never commits.

The stall is what a VM pause or SIGSTOP does to a live worker: its renewals stop, the lease expires,
a standby takes the shards and replays the held batch from the journal. The stalled worker then
resumes in the middle of that batch; committing it would give its clientMsgIDs second seqs (P2).
"""

from __future__ import annotations

import time

import pytest

from app.core.conversation import single_conversation_id
from app.pipeline.shard_lease import LeaseLost, ShardLease
from app.store.redis import msg_cache
from app.store.redis.client import get_broker_redis, get_redis
from app.store.redis.keys import client_msg_key, lease_key
from app.tasks.transfer import guard_commits, process_batch
from tests.factories import stored_msg


def test_a_worker_stalled_past_its_lease_does_not_commit(infra: dict[str, str], uid: str, commit_guard: None) -> None:
    broker = get_broker_redis()
    queue = f"transfer.lease-{uid}"
    stalled = ShardLease(broker, [queue], ttl_seconds=1)
    assert stalled.try_acquire() == ""
    guard_commits(lambda: stalled.confirm(0.3))
    time.sleep(1.3)  # no renewals meanwhile: the lease expires in Redis
    successor = ShardLease(broker, [queue], ttl_seconds=30)
    assert successor.try_acquire() == ""

    sender, receiver = f"stall{uid}", f"peer{uid}"
    conv = single_conversation_id(sender, receiver)
    msgs = [stored_msg(sender, receiver, i, int(time.time() * 1000)) for i in range(3)]
    with pytest.raises(LeaseLost, match=successor.owner):
        process_batch(msgs)
    # nothing of the batch became visible or recorded: the successor gives each message its one seq
    assert msg_cache.get_visible_max_seqs([conv])[conv] is None
    assert get_redis().hmget(client_msg_key(conv), [m["client_msg_id"] for m in msgs]) == [None] * 3
    assert broker.get(lease_key(queue)) == successor.owner


def test_a_lease_nobody_took_is_renewed_when_renewals_fell_behind(infra: dict[str, str], uid: str) -> None:
    broker = get_broker_redis()
    queue = f"transfer.lease-{uid}"
    lease = ShardLease(broker, [queue], ttl_seconds=2)
    assert lease.try_acquire() == ""
    assert 1.5 < lease.seconds_left() <= 2
    time.sleep(1.2)
    assert lease.seconds_left() < 1
    lease.confirm(1.0)  # too little left to commit on: renewed now, since it is still ours
    assert lease.seconds_left() > 1.5
    assert broker.pttl(lease_key(queue)) > 1500
    lease.confirm(1.0)  # enough left: no round trip needed, nothing changes
    assert broker.get(lease_key(queue)) == lease.owner

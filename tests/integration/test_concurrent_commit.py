"""P2 when two workers commit the same batch at once (one that stalled past its shard's lease, or a
RabbitMQ consumer whose connection the broker dropped while it waited out an outage): the commit
itself refuses clientMsgIDs that got a seq after the probe, so each keeps exactly one seq."""

from __future__ import annotations

import time

from app.core.conversation import single_conversation_id
from app.store.redis import msg_cache
from app.store.redis.client import get_redis
from app.store.redis.keys import client_msg_key
from app.tasks.transfer import commit_batch, group_by_conversation, guard_commits
from tests.factories import stored_msg


def test_the_second_commit_of_a_batch_takes_the_first_ones_seqs(
    infra: dict[str, str], uid: str, commit_guard: None
) -> None:
    sender, receiver = f"race{uid}", f"peer{uid}"
    conv = single_conversation_id(sender, receiver)
    now = int(time.time() * 1000)
    slow = [stored_msg(sender, receiver, i, now) for i in range(3)]
    fast = [dict(m) for m in slow]  # the same batch, as the other worker received it

    other: list[dict[str, int]] = []

    def the_other_worker_commits_first() -> None:
        guard_commits(None)  # the other worker's own commit runs unguarded, once
        done = commit_batch(group_by_conversation(fast))
        other.append({m["client_msg_id"]: m["seq"] for m in done.committed[conv]})

    guard_commits(the_other_worker_commits_first)  # runs between our probe/allocation and our commit
    result = commit_batch(group_by_conversation(slow))

    winner = other[0]
    assert sorted(winner.values()) == [4, 5, 6]  # our allocation (1-3) came first, theirs committed
    # we answer with their seqs and hand off what they committed; each clientMsgID has one seq
    assert {m["client_msg_id"]: m["seq"] for m in result.committed[conv]} == winner
    records = get_redis().hgetall(client_msg_key(conv))
    assert {k: int(v) for k, v in records.items()} == winner
    assert msg_cache.get_visible_max_seqs([conv])[conv] == 6
    assert msg_cache.get_cached_msgs(conv, [1, 2, 3]) == {}  # our unused seqs pull as placeholders
    assert [seqs for _, run in result.runs for seqs in [[m["seq"] for m in run]]] == [[4], [5], [6]]


def test_a_commit_of_many_messages_is_refused_whole_when_its_last_clientmsgid_has_a_seq(
    infra: dict[str, str], uid: str
) -> None:
    """commit.lua reads and writes the clientMsgIDs in chunks (Lua's unpack has a limit): a seq taken
    for the last one, in the last chunk, still refuses the whole commit before anything is written."""
    sender, receiver = f"many{uid}", f"peer{uid}"
    conv = single_conversation_id(sender, receiver)
    now = int(time.time() * 1000)
    msgs = [dict(stored_msg(sender, receiver, i, now), seq=i + 1) for i in range(1200)]
    r = get_redis()
    r.hset(client_msg_key(conv), msgs[-1]["client_msg_id"], 7000)  # committed elsewhere meanwhile

    assert msg_cache.commit(conv, msgs, {sender: 1200}) == msg_cache.COMMIT_REFUSED
    assert r.hgetall(client_msg_key(conv)) == {msgs[-1]["client_msg_id"]: "7000"}
    assert not msg_cache.get_visible_max_seqs([conv])[conv]  # no visible max at all
    assert msg_cache.get_cached_msgs(conv, [1, 600, 1200]) == {}

    r.delete(client_msg_key(conv))
    assert msg_cache.commit(conv, msgs, {sender: 1200}) == 1200
    records = {k: int(v) for k, v in r.hgetall(client_msg_key(conv)).items()}
    assert records == {m["client_msg_id"]: m["seq"] for m in msgs}  # every chunk of the records written
    assert msg_cache.get_visible_max_seqs([conv])[conv] == 1200
    cached = msg_cache.get_cached_msgs(conv, [1, 251, 501, 1200])
    assert {seq: m["client_msg_id"] for seq, m in cached.items()} == {
        s: msgs[s - 1]["client_msg_id"] for s in (1, 251, 501, 1200)
    }

"""On a Redis Cluster a script, a MULTI or a multi-key command may only touch keys of one slot.
Every script's KEYS, built by the same functions the code calls, hash to one slot: the slot of the
hash tag (the conversation, user or group), so a conversation's keys also live on one node."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from redis.crc import key_slot

from app.core.conversation import transfer_queue
from app.pipeline.shard_lease import ShardLease
from app.store.redis import keys, msg_cache, scripts

CONVERSATIONS = ["si_alice_bob", "sg_team42", "sn_admin_u1", "n_u1_u2", "si_用户_ü", "si_a_" + "x" * 60]
USERS = ["alice", "u1", "用户", "x" * 64]


def slot(key: str) -> int:
    return int(key_slot(key.encode()))


def one_slot(key_list: list[str]) -> int:
    slots = {slot(k) for k in key_list}
    assert len(slots) == 1, f"keys in {len(slots)} slots: {key_list}"
    return slots.pop()


def commit_keys(conv: str) -> list[str]:
    msgs = [{"seq": seq, "client_msg_id": f"c{seq}"} for seq in (1, 2, 99, 100, 101, 12345)]
    built, _args = msg_cache.commit_args(conv, msgs, {user: 7 for user in USERS})
    return built


def lease_keys(_conv: str) -> list[str]:
    # The keys ShardLease builds for every transfer queue at once (all or nothing in one script).
    lease = ShardLease(redis.Redis(), [transfer_queue(k) for k in range(64)])  # connects only when used
    return list(lease._keys)


# script -> the KEYS its call sites pass, for one conversation (user, group) name
SCRIPT_KEYS: dict[str, Callable[[str], list[str]]] = {
    "commit": commit_keys,
    "raise_capped": lambda conv: msg_cache.read_seq_keys(conv, "alice"),
    "raise_to": lambda conv: [keys.max_seq_key(conv)],
    # as transfer probes: the seq block, the clientMsgID records and the conversation's ready flag
    "malloc_seq": lambda c: [keys.malloc_seq_key(c), keys.client_msg_key(c), keys.conversation_ready_key(c)],
    "store_seq_block": lambda conv: [keys.malloc_seq_key(conv)],
    "store_next_seq_block": lambda conv: [keys.malloc_seq_key(conv)],
    "fill_members": lambda group: [keys.group_members_key(group)],
    "change_members": lambda group: [keys.group_members_key(group)],
    "delete_if_equal": lambda user: [keys.fcm_token_key(user, 2)],
    "badge_add": lambda user: [keys.badge_key(user)],
    "lease_acquire_all": lease_keys,
    "lease_release": lease_keys,
    # one hand-off: its journal stream and its queue. It runs on the broker's Redis, which kombu's
    # transport needs to be one server, so a call's several hand-offs (every shard of a gateway
    # flush; push and persist) may lie in several slots
    "journal_publish": lambda queue: [keys.journal_key(queue), queue],
}


def test_every_script_is_checked_here() -> None:
    assert set(SCRIPT_KEYS) == {path.stem for path in scripts.HERE.glob("*.lua")}


@pytest.mark.parametrize("script", sorted(SCRIPT_KEYS))
@pytest.mark.parametrize("name", CONVERSATIONS)
def test_each_script_touches_one_slot(script: str, name: str) -> None:
    one_slot(SCRIPT_KEYS[script](name))


@pytest.mark.parametrize("conv", CONVERSATIONS)
def test_a_conversations_keys_share_the_slot_of_its_id(conv: str) -> None:
    """So the commit script, the transfer probe (HMGET + EXISTS) and a cache MGET go to one node."""
    per_conversation = [
        keys.malloc_seq_key(conv),
        keys.max_seq_key(conv),
        keys.client_msg_key(conv),
        keys.conversation_ready_key(conv),
        *(keys.msg_cache_key(conv, seq) for seq in (1, 100, 10**9)),
        *(keys.user_read_seq_key(conv, user) for user in USERS),
        *(keys.client_ack_key(conv, cid) for cid in ("c1", "{other}", "a}b{c")),
    ]
    assert one_slot(per_conversation) == slot(conv)


@pytest.mark.parametrize("user", USERS)
def test_a_users_keys_share_the_slot_of_its_id(user: str) -> None:
    assert one_slot([keys.online_key(user), keys.logged_out_key(user, 5), keys.fcm_token_key(user, 2)]) == slot(user)


def test_keys_of_several_conversations_spread_over_slots() -> None:
    """Which is why reads across conversations (visible max seqs, read seqs) go through
    client.mget, one MGET per slot on a cluster, and not a plain MGET."""
    assert len({slot(keys.max_seq_key(conv)) for conv in CONVERSATIONS}) > 1
    assert slot(keys.kicked_token_key("tok")) != slot(keys.logged_out_key("alice", 5))

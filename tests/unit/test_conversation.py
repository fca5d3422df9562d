import zlib

import pytest

from app.conversation import (
    GROUP_CHAT,
    NOTIFICATION_CHAT,
    SINGLE_CHAT,
    conversation_id_for,
    doc_id,
    doc_index,
    doc_slot,
    shard_of,
    single_conversation_id,
    transfer_queue,
)


def test_single_conversation_id_sorts_users() -> None:
    assert single_conversation_id("bob", "alice") == "si_alice_bob"
    assert single_conversation_id("alice", "bob") == "si_alice_bob"


def test_conversation_id_by_session_type() -> None:
    assert conversation_id_for(SINGLE_CHAT, "u2", "u1", "") == "si_u1_u2"
    assert conversation_id_for(GROUP_CHAT, "u2", "", "g9") == "sg_g9"
    assert conversation_id_for(NOTIFICATION_CHAT, "z", "a", "") == "sn_a_z"
    with pytest.raises(ValueError):
        conversation_id_for(2, "a", "b", "")


def test_shard_is_crc32_and_stable() -> None:
    conv = "si_alice_bob"
    assert shard_of(conv, 8) == zlib.crc32(b"si_alice_bob") % 8
    assert all(0 <= shard_of(f"si_{i}_x", 5) < 5 for i in range(200))
    # spread: 200 conversations over 4 shards use every shard
    assert {shard_of(f"si_{i}_x", 4) for i in range(200)} == {0, 1, 2, 3}
    assert transfer_queue(3) == "transfer.3"


@pytest.mark.parametrize(
    ("seq", "index", "slot"),
    [(1, 0, 0), (100, 0, 99), (101, 1, 0), (250, 2, 49), (1000, 9, 99)],
)
def test_doc_math(seq: int, index: int, slot: int) -> None:
    assert doc_index(seq) == index
    assert doc_slot(seq) == slot
    assert doc_id("si_a_b", seq) == f"si_a_b:{index}"

import zlib

import pytest

from app.core.constants import GROUP_CHAT, NOTIFICATION_CHAT, SINGLE_CHAT
from app.core.conversation import (
    conversation_id_for,
    doc_id,
    doc_index,
    doc_slot,
    peer_of,
    shard_of,
    shards_of_part,
    single_conversation_id,
    transfer_queue,
)
from app.core.errors import ImError


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


def test_parts_share_the_shards_without_overlap() -> None:
    shards = [0, 1, 2, 3, 4]
    parts = [shards_of_part(shards, f"{i}/3") for i in (1, 2, 3)]
    assert parts == [[0, 3], [1, 4], [2]]
    assert sorted(k for part in parts for k in part) == shards
    assert shards_of_part([1, 3], "") == [1, 3]
    assert shards_of_part([1, 3], " 2 / 2 ") == [3]


def test_a_part_without_shards_or_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="no shard"):
        shards_of_part([0], "2/2")
    for bad in ("0/2", "3/2", "1", "a/b", "1/0"):
        with pytest.raises(ValueError, match="i/n"):
            shards_of_part([0, 1], bad)


def test_peer_of_a_single_conversation() -> None:
    assert peer_of("si_alice_bob", "alice") == "bob"
    assert peer_of("si_alice_bob", "bob") == "alice"
    assert peer_of("si_a_b_c", "a") == "b_c"  # ids with underscores: split on the owner
    assert peer_of("si_a_b_c", "a_b") == "c"
    assert peer_of("si_me_me", "me") == "me"


def test_a_refused_id_is_refused_every_time_and_never_remembered_as_an_answer() -> None:
    for _ in range(2):
        with pytest.raises(ImError):
            conversation_id_for(SINGLE_CHAT, "a_b", "c", "")
    assert conversation_id_for(SINGLE_CHAT, "c", "ab", "") == "si_ab_c"
    assert conversation_id_for(SINGLE_CHAT, "ab", "c", "") == "si_ab_c"

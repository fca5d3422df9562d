"""The edge's checks (app/core/validation.py): ids with one reading, bounded message fields, pulls, origins."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import validation as v
from app.core.constants import GROUP_CHAT, NOTIFICATION_CHAT, SINGLE_CHAT
from app.core.conversation import conversation_id_for
from app.core.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.proto import sdkws_pb2 as pb
from tests.factories import text_msgdata


def code_of(call: object, *args: object) -> int:
    with pytest.raises(ImError) as err:
        call(*args)  # type: ignore[operator]
    return err.value.code


@pytest.mark.parametrize("good", ["alice", "a", "x" * 64, "bob-1.2@example.com", "Ünïcödé", "AtAllTag", "u😀"])
def test_good_ids(good: str) -> None:
    assert v.check_user_id(good) == good
    assert v.check_group_id(good) == good


@pytest.mark.parametrize(
    "bad", ["", "x" * 65, "b_c", "a:b", "{tag}", "a b", "a\tb", "a\x00b", "a\x7fb", "a\u2028b", "a\ufeffb", None, 7]
)
def test_bad_ids(bad: object) -> None:
    assert code_of(v.check_user_id, bad) == ARGS_ERROR
    assert code_of(v.check_group_id, bad) == ARGS_ERROR


ids = st.text(min_size=1, max_size=64).filter(lambda s: v._ID.fullmatch(s) is not None)


@given(a=ids, b=ids)
def test_single_conversation_ids_read_back_as_their_users(a: str, b: str) -> None:
    conv = conversation_id_for(SINGLE_CHAT, a, b, "")
    assert v.check_conversation_id(conv) == ("si", tuple(sorted((a, b))))


@given(a=ids, b=ids, c=ids, d=ids)
def test_two_pairs_never_share_a_conversation(a: str, b: str, c: str, d: str) -> None:
    if {a, b} != {c, d}:
        assert conversation_id_for(SINGLE_CHAT, a, b, "") != conversation_id_for(SINGLE_CHAT, c, d, "")


def test_the_underscore_collision_is_refused() -> None:
    # before: a -> b_c and a_b -> c were both si_a_b_c
    assert code_of(conversation_id_for, SINGLE_CHAT, "a", "b_c", "") == ARGS_ERROR
    assert code_of(conversation_id_for, SINGLE_CHAT, "a_b", "c", "") == ARGS_ERROR
    assert code_of(conversation_id_for, GROUP_CHAT, "a", "", "g:1") == ARGS_ERROR
    assert code_of(conversation_id_for, NOTIFICATION_CHAT, "a", "b c", "") == ARGS_ERROR


@pytest.mark.parametrize(
    ("conv", "parsed"),
    [
        ("si_a_b", ("si", ("a", "b"))),
        ("sg_g1", ("sg", ("g1",))),
        ("sn_a_b", ("sn", ("a", "b"))),
        ("n_g1", ("n", ("g1",))),
        ("n_a_b", ("n", ("a", "b"))),
    ],
)
def test_conversation_id_forms(conv: str, parsed: tuple[str, tuple[str, ...]]) -> None:
    assert v.check_conversation_id(conv) == parsed


@pytest.mark.parametrize(
    "conv",
    ["", "si_a", "si_a_b_c", "sg_a_b", "sg_", "xx_a_b", "si__b", "si_a_", "n_a_b_c", "si_a_b:0", "x" * 200, None],
)
def test_bad_conversation_ids(conv: object) -> None:
    assert code_of(v.check_conversation_id, conv) == ARGS_ERROR


def test_conversation_id_lists_deduplicate_and_cap() -> None:
    assert v.check_conversation_ids(["si_a_b", "si_a_b", "sg_g"]) == ["si_a_b", "sg_g"]
    assert code_of(v.check_conversation_ids, [f"sg_g{i}" for i in range(3)], 2) == ARGS_ERROR


def test_user_id_lists_deduplicate_and_cap() -> None:
    assert v.check_user_ids(["a", "b", "a"]) == ["a", "b"]
    assert code_of(v.check_user_ids, [f"u{i}" for i in range(1001)]) == ARGS_ERROR
    assert code_of(v.check_user_ids, ["a", "b_c"]) == ARGS_ERROR


msg = text_msgdata


def test_a_plain_message_passes() -> None:
    m = msg(options={"history": True, "offlinePush": False}, atUserIDList=["AtAllTag", "carol"], ex="x" * 8192)
    assert v.check_msgdata(m, 1000) is m


@pytest.mark.parametrize(
    "fields",
    [
        {"recvID": "b_c"},
        {"groupID": "g:1"},
        {"clientMsgID": ""},
        {"clientMsgID": "x" * 65},
        {"clientMsgID": "a\nb"},
        {"serverMsgID": "x" * 65},
        {"content": b"x" * 1001},
        {"ex": "x" * 8193},
        {"ex": "é" * 4097},  # 8194 bytes in UTF-8
        {"attachedInfo": "x" * 8193},
        {"senderNickname": "n" * 256},
        {"senderFaceURL": "u" * 1025},
        {"options": {f"k{i}": True for i in range(33)}},
        {"options": {"a\x00b": True}},
        {"options": {"$set": True}},
        {"options": {"a.b": True}},
        {"options": {"": True}},
        {"options": {"k" * 65: True}},
        {"atUserIDList": ["u"] * 501},
        {"atUserIDList": ["b_c"]},
        {"offlinePushInfo": pb.OfflinePushInfo(title="t" * 1025)},
        {"offlinePushInfo": pb.OfflinePushInfo(desc="d" * 4097)},
        {"offlinePushInfo": pb.OfflinePushInfo(ex="e" * 8193)},
        {"offlinePushInfo": pb.OfflinePushInfo(iOSPushSound="s" * 257)},
        {"offlinePushInfo": pb.OfflinePushInfo(signalInfo="s" * 8193)},
    ],
)
def test_oversized_or_malformed_fields_are_refused(fields: dict[str, object]) -> None:
    assert code_of(v.check_msgdata, msg(**fields), 1000) == ARGS_ERROR


def test_the_whole_message_is_bounded() -> None:
    # every field within its own limit, together over content + MSGDATA_EXTRA_BYTES
    at_list = [f"{i:064d}" for i in range(v.MAX_AT_USERS)]
    big = msg(content=b"x" * 1000, ex="e" * 8000, attachedInfo="a" * 8000, atUserIDList=at_list)
    assert code_of(v.check_msgdata, big, 1000) == ARGS_ERROR


@given(st.dictionaries(st.text(max_size=80), st.booleans(), max_size=40))
def test_accepted_option_keys_are_mongodb_field_names(options: dict[str, bool]) -> None:
    try:
        v.check_msgdata(msg(options=options), 1000)
    except ImError as err:
        assert err.code == ARGS_ERROR
        return
    for key in options:
        assert key and "\x00" not in key and "." not in key and not key.startswith("$") and len(key) <= 64


@pytest.mark.parametrize("content_type", [101, 102, 110, 113, 114, 120, 999, 2200])
def test_client_content_types(content_type: int) -> None:
    v.check_client_origin(msg(contentType=content_type))
    v.check_client_origin(msg(contentType=content_type, msgFrom=100))


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"msgFrom": 200}, NO_PERMISSION),
        ({"msgFrom": 7}, NO_PERMISSION),
        ({"contentType": 1000}, NO_PERMISSION),
        ({"contentType": 1204}, NO_PERMISSION),
        ({"contentType": 1501}, NO_PERMISSION),
        ({"contentType": 1508}, NO_PERMISSION),
        ({"contentType": 1511}, NO_PERMISSION),
        ({"contentType": 2101}, NO_PERMISSION),
        ({"contentType": 5000}, NO_PERMISSION),
        ({"contentType": 0}, ARGS_ERROR),
        ({"contentType": 100}, ARGS_ERROR),
        ({"contentType": -3}, ARGS_ERROR),
        ({"contentType": 5001}, ARGS_ERROR),
    ],
)
def test_server_origins_are_refused(fields: dict[str, object], code: int) -> None:
    assert code_of(v.check_client_origin, msg(**fields)) == code


def receipt(**body: object) -> bytes:
    return json.dumps(body).encode()


def test_read_receipt_for_oneself() -> None:
    assert v.check_read_receipt(receipt(hasReadSeq=3), "alice", "si_alice_bob") == 3
    full = receipt(markAsReadUserID="alice", conversationID="si_alice_bob", seqs=[1, 2, 3], hasReadSeq="3")
    assert v.check_read_receipt(full, "alice", "si_alice_bob") == 3


@pytest.mark.parametrize(
    ("content", "code"),
    [
        (receipt(markAsReadUserID="bob", hasReadSeq=3), NO_PERMISSION),
        (receipt(conversationID="si_bob_carol", hasReadSeq=3), NO_PERMISSION),
        (receipt(hasReadSeq=-1), ARGS_ERROR),
        (receipt(hasReadSeq=True), ARGS_ERROR),
        (receipt(seqs=[1]), ARGS_ERROR),
        (receipt(hasReadSeq=1, detail={"x": 1}), ARGS_ERROR),
        (receipt(hasReadSeq=1, seqs=[[1]]), ARGS_ERROR),
        (b"[1]", ARGS_ERROR),
        (b"not json", ARGS_ERROR),
        (b"\xff", ARGS_ERROR),
        (b'{"hasReadSeq": 1, "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", ARGS_ERROR),
    ],
)
def test_read_receipts_speak_only_for_their_sender(content: bytes, code: int) -> None:
    assert code_of(v.check_read_receipt, content, "alice", "si_alice_bob") == code


def test_seq_ranges_one_per_conversation() -> None:
    req = pb.PullMessageBySeqsReq(
        seqRanges=[pb.SeqRange(conversationID="si_a_b", begin=1, end=i, num=100) for i in range(1, 5001)]
    )
    [only] = v.dedupe_seq_ranges(req)
    assert (only.conversationID, only.end) == ("si_a_b", 5000)  # the last one named, as OpenIM's map
    many = pb.PullMessageBySeqsReq(seqRanges=[pb.SeqRange(conversationID=f"sg_g{i}") for i in range(501)])
    assert code_of(v.dedupe_seq_ranges, many) == ARGS_ERROR
    assert code_of(v.dedupe_seq_ranges, pb.PullMessageBySeqsReq(seqRanges=[pb.SeqRange(conversationID="x")])) == 1001


def test_seq_lists_union_per_conversation() -> None:
    req = pb.GetSeqMessageReq(
        conversations=[pb.ConversationSeqs(conversationID="si_a_b", seqs=[3, 1, 2, 3]) for _ in range(5000)]
    )
    assert v.dedupe_seq_lists(req) == {"si_a_b": [1, 2, 3]}
    over = pb.GetSeqMessageReq(conversations=[pb.ConversationSeqs(conversationID="si_a_b", seqs=range(1, 1002))])
    assert code_of(v.dedupe_seq_lists, over) == ARGS_ERROR


def test_pull_total() -> None:
    v.check_pull_total(v.MAX_PULL_MSGS)
    assert code_of(v.check_pull_total, v.MAX_PULL_MSGS + 1) == ARGS_ERROR


def test_operation_ids() -> None:
    assert v.check_operation_id("op-1") == "op-1"
    assert code_of(v.check_operation_id, "x" * 129) == ARGS_ERROR
    assert code_of(v.check_operation_id, "a\x00") == ARGS_ERROR

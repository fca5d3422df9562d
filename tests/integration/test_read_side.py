"""Persistence and the read side through real processes: documents, pulls, read state, classification."""

from __future__ import annotations

import base64
import json
import threading
import time
from typing import Any

from app.celery_app import celery_app
from app.cli.client import text_of
from app.core.constants import WEB
from app.core.conversation import single_conversation_id
from app.pipeline import dead_letters
from app.store.mongo import client as mongo
from app.store.mongo import messages
from tests.conftest import flush_data_redis
from tests.factories import stored_msg
from tests.integration.helpers import eventually, login
from tests.integration.test_transfer_reliability import redis_broker_stack  # noqa: F401 (fixture)
from tests.stack import Stack


def doc_slots(conv: str, index: int) -> list[dict[str, Any] | None]:
    doc = mongo.get_db().msg.find_one({"doc_id": f"{conv}:{index}"})
    return [slot["msg"] for slot in doc["msgs"]] if doc else []


def test_250_messages_span_three_documents_and_pull_back_exactly(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a:
        sent = [a.send_text(bob, f"m{i}")["clientMsgID"] for i in range(250)]
        assert eventually(lambda: a.newest_seqs().get(conv) == 250)
        by_range: list[dict[str, Any]] = []
        for begin in (1, 101, 201):
            page = a.pull_range(conv, begin, begin + 99, 100)
            by_range.extend(page["Msgs"])
        assert [m["clientMsgID"] for m in by_range] == sent
        assert [int(m["seq"]) for m in by_range] == list(range(1, 251))
        # more than `num` in the range: the newest `num`
        newest = a.pull_range(conv, 1, 250, 10)
        assert [int(m["seq"]) for m in newest["Msgs"]] == list(range(241, 251))
        # by seq list (1005), in any order, out-of-range seqs left out
        listed = a.pull_seqs(conv, [250, 1, 100, 101, 999])
        assert [int(m["seq"]) for m in listed["Msgs"]] == [1, 100, 101, 250]
        assert [text_of(m) for m in listed["Msgs"]] == ["m0", "m99", "m100", "m249"]
        # last message (1007)
        assert a.last_messages([conv])[conv]["clientMsgID"] == sent[-1]

        def persisted() -> bool:
            return all(sum(1 for s in doc_slots(conv, i) if s) == n for i, n in ((0, 100), (1, 100), (2, 50)))

        assert eventually(persisted, timeout=60)
        for index, count in ((0, 100), (1, 100), (2, 50)):
            slots = doc_slots(conv, index)
            assert len(slots) == 100
            filled = [s for s in slots if s]
            assert [s["seq"] for s in filled] == list(range(index * 100 + 1, index * 100 + count + 1))
            assert [s["client_msg_id"] for s in filled] == sent[index * 100 : index * 100 + count]
        assert mongo.get_db().msg.count_documents({"doc_id": {"$regex": f"^{conv}:"}}) == 3
        full = mongo.get_db().msg.find_one({"doc_id": f"{conv}:2"})
        assert full is not None
        assert full["msgs"][60] == {"msg": None, "revoke": None, "del_list": [], "is_read": False}


def test_read_receipts_move_forward_only(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob, WEB) as b:
        for i in range(3):
            a.send_text(bob, f"read me {i}")
        assert eventually(lambda: b.read_state([conv]).get(conv, {}).get("maxSeq") == 3)
        assert b.read_state([conv])[conv]["hasReadSeq"] == 0
        assert eventually(lambda: a.read_state([conv])[conv]["hasReadSeq"] == 3)  # the sender read its own

        def receipt(seq: int) -> None:
            b.send(alice, 2200, json.dumps({"conversationID": conv, "hasReadSeq": seq}))

        receipt(2)
        assert eventually(lambda: b.read_state([conv])[conv]["hasReadSeq"] == 2)
        receipt(1)  # never backwards
        receipt(99)  # never past the newest message
        assert eventually(lambda: b.read_state([conv])[conv]["hasReadSeq"] == 3)
        assert b.read_state()[conv]["maxSeq"] == 3  # no receipt took a seq
        pushed = a.pushed_msgs(6, timeout=30)  # her own 3 messages come back; bob's receipts, with seq 0
        receipts = [int(m.get("seq", 0)) for m in pushed if int(m["contentType"]) == 2200]
        assert receipts == [0, 0, 0]
        assert sorted(int(m["seq"]) for m in pushed if int(m["contentType"]) == 101) == [1, 2, 3]

        def stored_read_seq() -> int:
            doc = mongo.get_db().seq_user.find_one({"user_id": bob, "conversation_id": conv})
            return int(doc["read_seq"]) if doc else -1

        assert eventually(lambda: stored_read_seq() == 3)
        bad = b.request_raw(
            1003,
            {
                "recvID": alice,
                "clientMsgID": "r",
                "sessionType": 1,
                "contentType": 2200,
                "content": base64.b64encode(b"not json").decode(),
            },
        )
        assert bad["errCode"] == 1001


def test_typing_and_unstored_messages_are_pushed_with_seq_zero(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob, WEB) as b:
        a.send(bob, 113, json.dumps({"msgTips": "typing"}))
        a.send(bob, 101, json.dumps({"content": "ephemeral"}), options={"history": False})
        a.send_text(bob, "kept")
        pushed = b.pushed_msgs(3, timeout=30)
        assert sorted((int(m.get("seq", 0)), int(m["contentType"])) for m in pushed) == [(0, 101), (0, 113), (1, 101)]
        assert eventually(lambda: b.newest_seqs().get(conv) == 1)
        assert [text_of(m) for m in b.pull_range(conv, 1, 10)["Msgs"]] == ["kept"]
        assert eventually(lambda: doc_slots(conv, 0) and doc_slots(conv, 0)[0] is not None)
        assert sum(1 for s in doc_slots(conv, 0) if s) == 1


def test_same_persist_batch_twice_leaves_one_copy_and_broken_runs_are_refused(stack: Any, uid: str) -> None:
    conv = single_conversation_id(f"p{uid}", f"q{uid}")
    now = int(time.time() * 1000)
    msgs = [stored_msg(f"p{uid}", f"q{uid}", i, now) | {"seq": 101 + i, "status": 2} for i in range(5)]
    for _ in range(2):
        celery_app.send_task("persist.batch", args=[[[conv, msgs]], []], queue="persist")
    broken = [stored_msg(f"p{uid}", f"q{uid}", 9, now) | {"seq": s} for s in (1, 2, 4)]
    celery_app.send_task("persist.batch", args=[[[conv, broken]], []], queue="persist")

    assert eventually(lambda: len([s for s in doc_slots(conv, 1) if s]) == 5)
    slots = doc_slots(conv, 1)
    assert [s["seq"] for s in slots if s] == [101, 102, 103, 104, 105]
    assert mongo.get_db().msg.count_documents({"doc_id": {"$regex": f"^{conv}:"}}) == 1

    def refused() -> list[dead_letters.DeadLetter]:
        return [e for e in dead_letters.list_entries("persist", 10_000) if e.conversation == conv]

    [entry] = eventually(refused)
    assert "broken run" in entry.reason and entry.payload["args"][0] == [[conv, broken]]
    assert doc_slots(conv, 0) == []  # the broken run wrote nothing
    assert stack.alive()["persist"]


def write_together(conv: str, parts: list[list[dict[str, Any]]]) -> list[BaseException]:
    """Several writers start the same instant on the same (new) document."""
    barrier = threading.Barrier(len(parts))
    errors: list[BaseException] = []

    def write(msgs: list[dict[str, Any]]) -> None:
        try:
            barrier.wait()
            messages.write_msgs(conv, msgs)
        except BaseException as exc:  # surfaced to the test
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(part,)) for part in parts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors


def test_racing_writers_on_a_new_document_lose_no_slot(infra: dict[str, str], uid: str) -> None:
    mongo.ensure_indexes()
    now = int(time.time() * 1000)
    for round_ in range(5):
        conv = single_conversation_id(f"race{uid}", f"r{round_}")
        halves = [
            [stored_msg("x", "y", i, now) | {"seq": i} for i in range(1, 101, 2)],
            [stored_msg("x", "y", i, now) | {"seq": i} for i in range(2, 101, 2)],
        ]
        assert write_together(conv, halves) == []
        assert [s["seq"] if s is not None else None for s in doc_slots(conv, 0)] == list(range(1, 101))


def test_redis_wiped_then_everything_pulls_from_mongodb(redis_broker_stack: Stack, uid: str) -> None:  # noqa: F811
    stack = redis_broker_stack
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a:
        sent = [a.send_text(bob, f"durable {i}")["clientMsgID"] for i in range(120)]
        b = login(stack, bob, WEB)
        try:
            b.send(alice, 2200, json.dumps({"hasReadSeq": 100}))
            assert eventually(lambda: b.read_state([conv])[conv]["hasReadSeq"] == 100)
        finally:
            b.close()
        assert eventually(lambda: sum(1 for s in doc_slots(conv, 0) + doc_slots(conv, 1) if s) == 120, timeout=60)
        assert eventually(
            lambda: (
                (mongo.get_db().seq_user.find_one({"user_id": bob, "conversation_id": conv}) or {}).get("read_seq")
                == 100
            )
        )
    flush_data_redis()  # the data Redis loses every key; nothing is cached now

    b = login(stack, bob, WEB)
    try:
        assert b.newest_seqs()[conv] == 120
        pulled = b.pull_range(conv, 1, 100, 100)["Msgs"] + b.pull_range(conv, 101, 120, 100)["Msgs"]
        assert [m["clientMsgID"] for m in pulled] == sent
        assert [text_of(m) for m in pulled] == [f"durable {i}" for i in range(120)]
        assert b.read_state([conv])[conv]["hasReadSeq"] == 100
        assert b.last_messages([conv])[conv]["clientMsgID"] == sent[-1]
    finally:
        b.close()


def test_permission_on_every_read_request(stack: Any, uid: str) -> None:
    alice, bob, eve = f"alice{uid}", f"bob{uid}", f"eve{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, eve) as e:
        a.send_text(bob, "private")
        assert eventually(lambda: a.newest_seqs().get(conv) == 1)
        for req, data in (
            (1005, {"conversations": [{"conversationID": conv, "seqs": [1]}]}),
            (1006, {"conversationIDs": [conv]}),
            (1007, {"conversationIDs": [conv]}),
            (1002, {"seqRanges": [{"conversationID": conv, "begin": 1, "end": 1, "num": 1}]}),
        ):
            resp = e.request_raw(req, data)
            assert (resp["errCode"], resp["data"]) == (1002, None), req
        assert conv not in e.read_state()
        assert e.request_raw(1005, {"userID": alice, "conversations": []})["errCode"] == 1002


def test_allocated_but_uncommitted_seqs_pull_as_placeholders(stack: Any, uid: str) -> None:
    """P5: a transfer that died between allocation and commit leaves a gap; it pulls as status 4."""
    from app.seq_lua import seq_allocator

    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a:
        a.send_text(bob, "one")
        assert eventually(lambda: a.newest_seqs().get(conv) == 1)
        seq_allocator().malloc(conv, 3)  # seqs 2..4, never committed
        assert a.newest_seqs()[conv] == 1  # the visible max does not cover them
        a.send_text(bob, "five")
        assert eventually(lambda: a.newest_seqs().get(conv) == 5)
        pulled = a.pull_range(conv, 1, 5)["Msgs"]
        assert [(int(m["seq"]), int(m["status"])) for m in pulled] == [(1, 2), (2, 4), (3, 4), (4, 4), (5, 2)]
        assert [text_of(m) for m in pulled if int(m["status"]) == 2] == ["one", "five"]


def test_a_document_gone_behind_the_writers_back_is_written_again_whole(infra: dict[str, str], uid: str) -> None:
    """The writer sets slots of documents it knows without asking MongoDB whether they exist; one
    that is gone all the same (a dropped collection) is noticed and created again, nothing lost."""
    mongo.ensure_indexes()
    now = int(time.time() * 1000)
    conv = single_conversation_id(f"gone{uid}", "other")
    msgs = [stored_msg(f"gone{uid}", "other", seq, now) | {"seq": seq, "status": 2} for seq in range(1, 5)]
    assert messages.write_msgs(conv, msgs[:2]) == 1  # a new document: inserted, now known
    assert messages.write_msgs(conv, msgs[2:3]) == 1  # known: its slot is set without a lookup
    assert [(m or {}).get("client_msg_id") for m in doc_slots(conv, 0)[:3]] == [f"gone{uid}-{s}" for s in (1, 2, 3)]

    mongo.get_db().msg.delete_many({"doc_id": f"{conv}:0"})
    assert messages.write_msgs(conv, msgs[3:4]) == 1
    slots = doc_slots(conv, 0)
    fourth = slots[3]
    assert len(slots) == 100 and fourth is not None and fourth["client_msg_id"] == f"gone{uid}-4"

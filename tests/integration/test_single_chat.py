"""One message's whole path, through real processes: websocket -> broker -> workers -> Redis/MongoDB -> push."""

from __future__ import annotations

import json
from typing import Any

from app.cli.client import text_of
from app.core.constants import TEXT, WEB
from app.core.conversation import single_conversation_id
from app.gateway import MAX_SENDS_IN_FLIGHT
from app.store.mongo import client as mongo
from tests.integration.helpers import eventually, login


def slots_in_mongo(conv: str, index: int) -> list[dict[str, Any] | None]:
    doc = mongo.get_db().msg.find_one({"doc_id": f"{conv}:{index}"})
    if doc is None:
        return []
    return [slot["msg"] for slot in doc["msgs"]]


def test_hundred_messages_reach_online_recipient_in_order(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob, WEB) as b:
        sent = []
        for i in range(100):
            ack = a.send_text(bob, f"message {i}")
            assert ack["clientMsgID"] and ack["serverMsgID"] and int(ack["sendTime"]) > 0
            sent.append(ack["clientMsgID"])

        pushed = b.pushed_msgs(100, timeout=60)
        assert [int(m["seq"]) for m in pushed] == list(range(1, 101))
        assert [m["clientMsgID"] for m in pushed] == sent
        assert [text_of(m) for m in pushed] == [f"message {i}" for i in range(100)]
        assert all(m["sendID"] == alice and m["recvID"] == bob for m in pushed)

        assert b.newest_seqs()[conv] == 100
        pulled = b.pull_range(conv, 1, 100, num=100)
        assert [int(m["seq"]) for m in pulled["Msgs"]] == list(range(1, 101))
        assert [m["clientMsgID"] for m in pulled["Msgs"]] == sent
        assert pulled["isEnd"] is True

        def persisted() -> list[Any]:
            slots = slots_in_mongo(conv, 0)
            return slots if slots and all(slots) else []

        slots = eventually(persisted)
        assert [s["seq"] for s in slots] == list(range(1, 101))
        assert [s["client_msg_id"] for s in slots] == sent
        assert all(s["send_id"] == alice and s["recv_id"] == bob and s["status"] == 2 for s in slots)
        assert json.loads(slots[0]["content"]) == {"content": "message 0"}


def test_messages_in_flight_together_on_one_connection_keep_their_order(stack: Any, uid: str) -> None:
    """A client need not wait for each answer: the gateway goes on reading while earlier SendMsgs
    wait for their batch (and past MAX_SENDS_IN_FLIGHT it reads no more until one is answered); every
    message is answered, and the conversation keeps the order they were sent in (P3)."""
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    count = MAX_SENDS_IN_FLIGHT + 36  # within the request rate limit's burst
    with login(stack, alice) as a, login(stack, bob, WEB) as b:
        answers = [a.send_later(bob, TEXT, json.dumps({"content": f"burst {i}"})) for i in range(count)]
        acks = [answer() for answer in answers]
        assert all(ack["serverMsgID"] and int(ack["sendTime"]) > 0 for ack in acks)
        sent = [ack["clientMsgID"] for ack in acks]
        assert len(set(sent)) == count

        pushed = b.pushed_msgs(count, timeout=60)
        assert [int(m["seq"]) for m in pushed] == list(range(1, count + 1))
        assert [text_of(m) for m in pushed] == [f"burst {i}" for i in range(count)]
        assert [m["clientMsgID"] for m in pushed] == sent
        assert b.newest_seqs()[conv] == count


def test_offline_recipient_gets_provider_push_and_pulls_later(stack: Any, provider: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a:
        sent = [a.send_text(bob, f"while you were away {i}")["clientMsgID"] for i in range(5)]

    posts = provider.wait_for_user(bob, 5)
    # the offline worker runs several requests at once: notifications may arrive in any order
    offline = sorted((m for post in posts for m in post["msgs"]), key=lambda m: m["seq"])
    assert [m["clientMsgID"] for m in offline] == sent
    assert [m["seq"] for m in offline] == [1, 2, 3, 4, 5]
    assert all(post["conversationID"] == conv for post in posts)
    last_post = max(posts, key=lambda p: p["msgs"][-1]["seq"])
    assert last_post["desc"] == "while you were away 4"
    assert not provider.for_user(alice)  # the sender is never pushed offline

    b = login(stack, bob, WEB)
    try:
        assert b.newest_seqs()[conv] == 5
        pulled = b.pull_range(conv, 1, 5)
        assert [m["clientMsgID"] for m in pulled["Msgs"]] == sent
        assert [text_of(m) for m in pulled["Msgs"]] == [f"while you were away {i}" for i in range(5)]
    finally:
        b.close()


def test_offline_push_is_retried_when_provider_fails(stack: Any, provider: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    attempts_before = provider.attempts
    provider.fail_next = 2
    with login(stack, alice) as a:
        cid = a.send_text(bob, "retry me")["clientMsgID"]
    posts = provider.wait_for_user(bob, 1, timeout=60)
    assert [m["clientMsgID"] for post in posts for m in post["msgs"]] == [cid]
    assert provider.attempts - attempts_before >= 3  # two 503s, then the accepted one


def test_sender_other_device_gets_the_push(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    with login(stack, alice) as a_desktop, login(stack, alice, 2) as a_phone:
        cid = a_desktop.send_text(bob, "synced")["clientMsgID"]
        pushed = a_phone.pushed_msgs(1, timeout=30)
        assert [m["clientMsgID"] for m in pushed] == [cid]
        # the sending device gets its own message back too (OpenIM's SDKs learn its seq from it)
        assert [m["clientMsgID"] for m in a_desktop.pushed_msgs(1, timeout=30)] == [cid]


def test_resent_client_msg_id_keeps_one_seq(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a:
        a.send_text(bob, "once", client_msg_id=f"cid-{uid}")
        a.send_text(bob, "once", client_msg_id=f"cid-{uid}")
        a.send_text(bob, "twice", client_msg_id=f"cid2-{uid}")
        assert eventually(lambda: a.newest_seqs().get(conv) == 2)
        pulled = a.pull_range(conv, 1, 10)
        assert [m["clientMsgID"] for m in pulled["Msgs"]] == [f"cid-{uid}", f"cid2-{uid}"]

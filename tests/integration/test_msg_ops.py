"""The message operations through the real stack (issue 20): revoke, delete, clear, read state and
server-side send, with websocket clients on the other side and pulls from the cache and MongoDB."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

import pytest
import redis
import requests

from app.cli.client import ImClient, text_of
from app.core import msg_ops
from app.core.constants import LINUX, WEB
from app.core.conversation import group_conversation_id, single_conversation_id
from app.services.auth import mint_token
from app.store.mongo import client as mongo
from app.store.mongo import messages
from app.store.redis.client import get_redis
from app.store.redis.keys import msg_cache_key
from tests.conftest import REDIS_URL
from tests.integration.helpers import admin_token, eventually, login, rest
from tests.integration.test_transfer_reliability import redis_broker_stack  # noqa: F401 (fixture)
from tests.stack import Stack

REVOKE_TIPS = 2101
DELETE_TIPS = 2102
CLEAR_TIPS = 1703
READ_RECEIPT = 2200


@pytest.fixture(scope="module")
def admin(stack: Any) -> str:
    return admin_token(stack.gateway_port)


def token(user: str, platform: int = LINUX) -> str:
    return mint_token(user, platform)


def call(stack: Any, path: str, body: dict[str, Any], tok: str, operation_id: str = "") -> dict[str, Any]:
    headers = {"operationID": operation_id or uuid.uuid4().hex, "token": tok}
    answer: dict[str, Any] = requests.post(
        f"http://127.0.0.1:{stack.gateway_port}{path}", json=body, headers=headers, timeout=60
    ).json()
    return answer


def detail(msg: dict[str, Any]) -> dict[str, Any]:
    """The tips of a notification MsgData dict: content {"detail": "<JSON>"}."""
    body = json.loads(base64.b64decode(msg.get("content", "") or ""))
    tips: dict[str, Any] = json.loads(body["detail"])
    return tips


def raw_content(msg: dict[str, Any]) -> str:
    return base64.b64decode(msg.get("content", "") or "").decode()


def pushes_of_type(client: ImClient, content_type: int, count: int = 1, timeout: float = 20) -> list[dict[str, Any]]:
    """Pushed messages of this content type: at least `count`, then whatever else comes in half a second."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        pushed = client.pushed_msgs(1, timeout=max(0.0, deadline - time.monotonic()))
        got += [m for m in pushed if m["contentType"] == content_type]
    return got + [m for m in client.pushed_msgs(10_000, timeout=0.5) if m["contentType"] == content_type]


def slot(conv: str, seq: int) -> dict[str, Any] | None:
    doc = mongo.get_db().msg.find_one({"doc_id": f"{conv}:{(seq - 1) // 100}"})
    found: dict[str, Any] | None = doc["msgs"][(seq - 1) % 100] if doc else None
    return found


def persisted(conv: str, seq: int) -> bool:
    found = slot(conv, seq)
    return bool(found and found.get("msg"))


# --- revoke ------------------------------------------------------------------------------------------


def test_revoke_is_seen_by_both_sides_and_by_later_pulls_from_cache_and_mongodb(stack: Any, uid: str) -> None:
    alice, bob, eve = f"alice{uid}", f"bob{uid}", f"eve{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob) as b:
        a.newest_seqs()
        b.newest_seqs()
        a.send_text(bob, "secret one")
        a.send_text(bob, "second")
        assert eventually(lambda: b.newest_seqs().get(conv) == 2)
        assert len(a.pushed_msgs(2, timeout=20)) == 2 and len(b.pushed_msgs(2, timeout=20)) == 2

        body = {"conversationID": conv, "seq": 1, "userID": alice}
        assert call(stack, "/msg/revoke_msg", body, token(alice))["errCode"] == 0
        for client in (a, b):
            tips = pushes_of_type(client, REVOKE_TIPS)
            assert len(tips) == 1
            assert int(tips[0]["seq"]) == 3  # a stored notification: the conversation's next seq
            assert detail(tips[0])["revokerUserID"] == alice
            assert int(detail(tips[0])["seq"]) == 1
            assert detail(tips[0])["conversationID"] == conv

        def revoked_for(client: ImClient) -> dict[str, Any]:
            msg: dict[str, Any] = client.pull_range(conv, 1, 3)["Msgs"][0]
            return msg

        for client in (a, b):  # from the cache
            msg = revoked_for(client)
            assert (int(msg["seq"]), msg["contentType"]) == (1, REVOKE_TIPS)
            assert "secret one" not in raw_content(msg)
            assert detail(msg)["revokerID"] == alice and detail(msg)["sourceMessageSendID"] == alice
        assert b.last_messages([conv])[conv]["contentType"] == REVOKE_TIPS  # the tips, now the newest
        cached = get_redis().get(msg_cache_key(conv, 1))
        assert cached is not None and "secret one" not in cached

        assert eventually(lambda: persisted(conv, 1) and persisted(conv, 3), timeout=60)
        stored = slot(conv, 1)
        assert stored is not None and stored["revoke"]["user_id"] == alice
        get_redis().delete(msg_cache_key(conv, 1))  # from MongoDB now
        msg = revoked_for(b)
        assert msg["contentType"] == REVOKE_TIPS and "secret one" not in raw_content(msg)

        # twice: done already, no second notification
        assert call(stack, "/msg/revoke_msg", body, token(alice))["errCode"] == 0
        assert pushes_of_type(b, REVOKE_TIPS, timeout=2) == []
        assert b.newest_seqs()[conv] == 3

        # the receiver may not revoke the sender's message, nor a stranger, nor for someone else
        assert call(stack, "/msg/revoke_msg", {**body, "seq": 2, "userID": bob}, token(bob))["errCode"] == 1002
        assert call(stack, "/msg/revoke_msg", {**body, "seq": 2, "userID": eve}, token(eve))["errCode"] == 1002
        assert call(stack, "/msg/revoke_msg", {**body, "seq": 2}, token(bob))["errCode"] == 1002
        assert call(stack, "/msg/revoke_msg", {**body, "seq": 99}, token(alice))["errCode"] == 1004
        assert call(stack, "/msg/revoke_msg", {**body, "seq": "x"}, token(alice))["errCode"] == 1001
        assert text_of(b.pull_range(conv, 2, 2)["Msgs"][0]) == "second"


def test_group_owner_revokes_a_members_message_and_a_member_may_not(stack: Any, admin: str, uid: str) -> None:
    owner, m1, m2 = f"own{uid}", f"m1{uid}", f"m2{uid}"
    group_id = f"g{uid}"
    conv = group_conversation_id(group_id)
    created = rest(
        stack.gateway_port,
        "/group/create_group",
        {"ownerUserID": owner, "memberUserIDs": [m1, m2], "groupInfo": {"groupID": group_id, "groupName": "g"}},
        admin,
    )
    assert created["errCode"] == 0, created
    with login(stack, m1) as c1:
        c1.newest_seqs()
        c1.send_group_text(group_id, "from m1")
        assert eventually(lambda: c1.newest_seqs().get(conv) == 2)  # 1: the group's creation
        body = {"conversationID": conv, "seq": 2}
        assert call(stack, "/msg/revoke_msg", {**body, "userID": m2}, token(m2))["errCode"] == 1002
        assert call(stack, "/msg/revoke_msg", {**body, "userID": owner}, token(owner))["errCode"] == 0
        tips = pushes_of_type(c1, REVOKE_TIPS, count=2)
        # once in the group's conversation (its seq), once as a notification the SDKs act on
        assert [(detail(t)["revokerUserID"], int(t["seq"])) for t in tips] == [(owner, 3), (owner, 3)]
        assert c1.pull_range(conv, 2, 2)["Msgs"][0]["contentType"] == REVOKE_TIPS
        # a notification is not a member's to revoke
        assert call(stack, "/msg/revoke_msg", {**body, "seq": 1, "userID": owner}, token(owner))["errCode"] == 1002


# --- delete and clear ----------------------------------------------------------------------------


def test_delete_for_me_is_synced_to_my_other_device_and_leaves_the_peer_alone(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, alice, WEB) as a_web, login(stack, bob) as b:
        for client in (a, a_web, b):
            client.newest_seqs()
        for i in range(3):
            a.send_text(bob, f"m{i}")
        assert eventually(lambda: b.newest_seqs().get(conv) == 3)
        answer = call(stack, "/msg/delete_msgs", {"conversationID": conv, "seqs": [2], "userID": alice}, token(alice))
        assert answer["errCode"] == 0, answer
        synced = pushes_of_type(a_web, DELETE_TIPS)
        assert [(detail(m)["conversationID"], detail(m)["seqs"]) for m in synced] == [(conv, [2])]
        assert int(synced[0].get("seq", 0)) == 0  # online only, as OpenIM sends it
        mine = a.pull_range(conv, 1, 3)["Msgs"]
        assert [(int(m["seq"]), m.get("status")) for m in mine][1] == (2, 4)
        assert raw_content(mine[1]) == ""
        assert [text_of(m) for m in b.pull_range(conv, 1, 3)["Msgs"]] == ["m0", "m1", "m2"]
        assert pushes_of_type(b, DELETE_TIPS, timeout=1) == []
        # only for oneself
        other = {"conversationID": conv, "seqs": [1], "userID": bob}
        assert call(stack, "/msg/delete_msgs", other, token(alice))["errCode"] == 1002
        everyone = {**other, "userID": alice, "deleteSyncOpt": {"IsSyncSelf": True, "IsSyncOther": True}}
        assert call(stack, "/msg/delete_msgs", everyone, token(alice))["errCode"] == 1002
        assert (
            call(stack, "/msg/delete_msg_phsical_by_seq", {"conversationID": conv, "seqs": [1]}, token(alice))[
                "errCode"
            ]
            == 1002
        )


def test_clear_then_pull_returns_nothing_below_the_new_min_seq(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob) as b:
        a.newest_seqs()
        for i in range(3):
            b.send_text(alice, f"old {i}")
        assert eventually(lambda: a.newest_seqs().get(conv) == 3)
        assert a.read_state([conv])[conv]["hasReadSeq"] == 0
        body = {"conversationIDs": [conv], "userID": alice}
        assert call(stack, "/msg/clear_conversation_msg", body, token(alice))["errCode"] == 0
        tips = pushes_of_type(a, CLEAR_TIPS)
        assert [detail(t)["conversationIDs"] for t in tips] == [[conv]]
        assert a.pull_range(conv, 1, 3)["Msgs"] == []
        assert a.pull_seqs(conv, [1, 2, 3]).get("Msgs", []) == []
        assert a.read_state([conv])[conv]["hasReadSeq"] == 3  # cleared counts as read
        assert len(b.pull_range(conv, 1, 3)["Msgs"]) == 3  # the peer keeps them
        b.send_text(alice, "new")
        assert eventually(lambda: a.newest_seqs().get(conv) == 4)
        assert [text_of(m) for m in a.pull_range(conv, 1, 4)["Msgs"]] == ["new"]
        # all of a user's conversations
        assert call(stack, "/msg/user_clear_all_msg", {"userID": alice}, token(alice))["errCode"] == 0
        assert a.pull_range(conv, 1, 4)["Msgs"] == []
        assert call(stack, "/msg/user_clear_all_msg", {"userID": bob}, token(alice))["errCode"] == 1002


def test_admin_physical_deletes_are_gone_for_everyone(stack: Any, admin: str, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    counted = 'msg_operations_total{operation="delete_physical_by_seq",outcome="ok"}'
    before = stack.metric("gateway", counted)
    with login(stack, alice) as a, login(stack, bob) as b:
        a.newest_seqs()
        for i in range(4):
            a.send_text(bob, f"gone {i}")
        assert eventually(lambda: b.newest_seqs().get(conv) == 4)
        answer = call(stack, "/msg/delete_msg_phsical_by_seq", {"conversationID": conv, "seqs": [2]}, admin)
        assert answer["errCode"] == 0, answer
        assert stack.metric("gateway", counted) == before + 1
        for client in (a, b):
            second = client.pull_range(conv, 2, 2)["Msgs"][0]
            assert (int(second["seq"]), second.get("status"), raw_content(second)) == (2, 4, "")
        assert eventually(lambda: persisted(conv, 4), timeout=60)
        assert b.pull_range(conv, 2, 2)["Msgs"][0].get("status") == 4  # also once persist is done

        everything = {"conversationIDs": [conv], "timestamp": 0}  # sent more than 0 s ago: all of it
        assert call(stack, "/msg/delete_msg_physical", everything, admin)["errCode"] == 0
        for client in (a, b):
            assert client.pull_range(conv, 1, 4)["Msgs"] == []
        emptied = slot(conv, 1)
        assert emptied is not None and emptied["msg"] is None
        b.send_text(alice, "after")
        assert eventually(lambda: a.newest_seqs().get(conv) == 5)
        assert [text_of(m) for m in a.pull_range(conv, 1, 5)["Msgs"]] == ["after"]
        assert call(stack, "/msg/delete_msg_physical", everything, token(alice))["errCode"] == 1002


def test_revoke_delete_and_clear_survive_the_data_redis_losing_everything(
    redis_broker_stack: Stack,  # noqa: F811
    uid: str,
) -> None:
    stack = redis_broker_stack
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    conv, other = single_conversation_id(alice, bob), single_conversation_id(alice, carol)
    with login(stack, alice) as a:
        a.newest_seqs()
        for i in range(4):
            a.send_text(bob, f"keep {i}")
        a.send_text(carol, "to carol")
        assert eventually(lambda: a.newest_seqs().get(conv) == 4 and a.newest_seqs().get(other) == 1)
        assert (
            call(stack, "/msg/revoke_msg", {"conversationID": conv, "seq": 1, "userID": alice}, token(alice))["errCode"]
            == 0
        )
        assert (
            call(stack, "/msg/delete_msgs", {"conversationID": conv, "seqs": [2], "userID": alice}, token(alice))[
                "errCode"
            ]
            == 0
        )
        assert (
            call(stack, "/msg/clear_conversation_msg", {"conversationIDs": [other], "userID": alice}, token(alice))[
                "errCode"
            ]
            == 0
        )
        assert eventually(lambda: all(persisted(conv, s) for s in range(1, 6)) and persisted(other, 1), timeout=60)
    redis.Redis.from_url(REDIS_URL).flushdb()  # the data Redis loses every key; the broker lives apart

    with login(stack, alice) as a, login(stack, bob) as b:
        mine = a.pull_range(conv, 1, 5)["Msgs"]
        assert [(int(m["seq"]), m["contentType"]) for m in mine][:2] == [(1, REVOKE_TIPS), (2, 101)]
        assert mine[1].get("status") == 4 and raw_content(mine[1]) == ""  # deleted for alice
        assert [text_of(m) for m in mine[2:4]] == ["keep 2", "keep 3"]
        theirs = b.pull_range(conv, 1, 5)["Msgs"]
        assert theirs[0]["contentType"] == REVOKE_TIPS and "keep 0" not in raw_content(theirs[0])
        assert text_of(theirs[1]) == "keep 1"  # deleted for alice only
        assert a.pull_range(other, 1, 1)["Msgs"] == []  # cleared, also with Redis empty
        assert a.newest_seqs()[other] == 1


# --- read state ----------------------------------------------------------------------------------


def active_unread(stack: Any, user: str) -> int:
    answer = call(stack, "/jssdk/get_active_conversations", {"count": 10}, token(user))
    assert answer["errCode"] == 0, answer
    return int(answer["data"]["unreadCount"])


def test_mark_as_read_moves_unread_counts_and_tells_the_peer(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob) as b, login(stack, bob, WEB) as b_web:
        for client in (a, b, b_web):
            client.newest_seqs()
        for i in range(3):
            a.send_text(bob, f"unread {i}")
        assert eventually(lambda: b.newest_seqs().get(conv) == 3)
        assert active_unread(stack, bob) == 3
        assert active_unread(stack, alice) == 0

        body = {"conversationID": conv, "seqs": [1, 2], "userID": bob}
        assert call(stack, "/msg/mark_msgs_as_read", body, token(bob))["errCode"] == 0
        assert active_unread(stack, bob) == 1
        receipts = pushes_of_type(a, READ_RECEIPT)
        assert [(detail(r)["markAsReadUserID"], detail(r)["seqs"], int(detail(r)["hasReadSeq"])) for r in receipts] == [
            (bob, [1, 2], 2)
        ]
        assert pushes_of_type(b_web, READ_RECEIPT)  # the reader's other device learns it too

        whole: dict[str, Any] = {"conversationID": conv, "hasReadSeq": 3, "userID": bob}
        assert call(stack, "/msg/mark_conversation_as_read", whole, token(bob))["errCode"] == 0
        assert active_unread(stack, bob) == 0
        got = call(stack, "/msg/get_conversations_has_read_and_max_seq", {"userID": bob}, token(bob))
        assert got["data"]["seqs"][conv] == {
            "maxSeq": 3,
            "hasReadSeq": 3,
            "maxSeqTime": got["data"]["seqs"][conv]["maxSeqTime"],
        }
        assert got["data"]["seqs"][conv]["maxSeqTime"] > 0

        # never back, never past the max
        back = {"conversationID": conv, "hasReadSeq": 1, "userID": bob}
        assert call(stack, "/msg/set_conversation_has_read_seq", back, token(bob))["errCode"] == 0
        assert b.read_state([conv])[conv]["hasReadSeq"] == 3
        past = {**back, "hasReadSeq": 9}
        assert call(stack, "/msg/set_conversation_has_read_seq", past, token(bob))["errCode"] == 1001
        assert call(stack, "/msg/mark_msgs_as_read", {**body, "seqs": [9]}, token(bob))["errCode"] == 1001
        assert call(stack, "/msg/mark_conversation_as_read", whole, token(alice))["errCode"] == 1002


def test_group_mark_as_read_syncs_the_readers_devices(stack: Any, admin: str, uid: str) -> None:
    owner, reader = f"own{uid}", f"rd{uid}"
    group_id = f"g{uid}"
    conv = group_conversation_id(group_id)
    created = rest(
        stack.gateway_port,
        "/group/create_group",
        {"ownerUserID": owner, "memberUserIDs": [reader], "groupInfo": {"groupID": group_id, "groupName": "g"}},
        admin,
    )
    assert created["errCode"] == 0, created
    with login(stack, owner) as o, login(stack, reader, WEB) as r_web:
        o.newest_seqs()
        r_web.newest_seqs()
        o.send_group_text(group_id, "hello group")
        assert eventually(lambda: r_web.newest_seqs().get(conv) == 2)
        body = {"conversationID": conv, "hasReadSeq": 2, "userID": reader}
        assert call(stack, "/msg/mark_conversation_as_read", body, token(reader))["errCode"] == 0
        synced = pushes_of_type(r_web, READ_RECEIPT)
        assert [(detail(s)["conversationID"], int(detail(s)["hasReadSeq"])) for s in synced] == [(conv, 2)]
        assert pushes_of_type(o, READ_RECEIPT, timeout=1) == []  # a group's members are not told
        assert r_web.read_state([conv])[conv]["hasReadSeq"] == 2
        # deleting and clearing in a group are the reader's own too
        mine = {"conversationID": conv, "seqs": [2], "userID": reader}
        assert call(stack, "/msg/delete_msgs", mine, token(reader))["errCode"] == 0
        assert r_web.pull_range(conv, 2, 2)["Msgs"][0].get("status") == 4
        assert text_of(o.pull_range(conv, 2, 2)["Msgs"][0]) == "hello group"
        cleared = {"conversationIDs": [conv], "userID": reader}
        assert call(stack, "/msg/clear_conversation_msg", cleared, token(reader))["errCode"] == 0
        assert r_web.pull_range(conv, 1, 2)["Msgs"] == []
        assert len(o.pull_range(conv, 1, 2)["Msgs"]) == 2


# --- server-side send ----------------------------------------------------------------------------


def test_admin_sends_as_anyone_and_users_may_not(stack: Any, admin: str, uid: str) -> None:
    bot, bob = f"bot{uid}", f"bob{uid}"
    conv = single_conversation_id(bot, bob)
    body = {
        "sendID": bot,
        "recvID": bob,
        "content": {"content": "system notice"},
        "contentType": 101,
        "sessionType": 1,
    }
    with login(stack, bob) as b:
        b.newest_seqs()
        op = uuid.uuid4().hex
        answer = call(stack, "/msg/send_msg", body, admin, op)
        assert answer["errCode"] == 0, answer
        assert set(answer["data"]) == {"serverMsgID", "clientMsgID", "sendTime"}
        pushed = b.pushed_msgs(1, timeout=20)
        assert [(m["clientMsgID"], m["msgFrom"], text_of(m)) for m in pushed] == [
            (answer["data"]["clientMsgID"], 200, "system notice")
        ]
        assert int(pushed[0]["seq"]) == 1
        assert eventually(lambda: b.newest_seqs().get(conv) == 1)
        status = call(stack, "/msg/check_msg_is_send_success", {}, admin, op)
        assert status["data"] == {"status": 2}
        assert call(stack, "/msg/check_msg_is_send_success", {}, admin)["data"] == {"status": 0}

        online_only = {**body, "isOnlineOnly": True, "msgFrom": 100}
        assert call(stack, "/msg/send_msg", online_only, admin)["errCode"] == 0
        assert [int(m.get("seq", 0)) for m in b.pushed_msgs(1, timeout=20)] == [0]

        business = {"sendUserID": bot, "recvUserID": bob, "key": "k", "data": "d", "reliabilityLevel": 2}
        assert call(stack, "/msg/send_business_notification", business, admin)["errCode"] == 0
        note = pushes_of_type(b, 2001)
        assert [detail(n) for n in note] == [{"key": "k", "data": "d"}]

    assert call(stack, "/msg/send_msg", body, token(bob))["errCode"] == 1002
    assert call(stack, "/msg/send_msg", {**body, "contentType": 1501}, admin)["errCode"] == 1001
    assert call(stack, "/msg/send_msg", {**body, "recvID": "bad_id"}, admin)["errCode"] == 1001
    assert call(stack, "/msg/batch_send_msg", {**body, "recvIDs": [bob]}, token(bob))["errCode"] == 1002
    server_time = requests.post(f"http://127.0.0.1:{stack.gateway_port}/msg/get_server_time", json={}, timeout=10)
    assert abs(server_time.json()["data"]["serverTime"] - time.time() * 1000) < 60_000


def test_batch_send_to_a_thousand_users_delivers_once_each(stack: Any, admin: str, uid: str) -> None:
    sender = f"news{uid}"
    receivers = [f"r{i}x{uid}" for i in range(1000)]
    online = receivers[:20]
    clients = [login(stack, user) for user in online]
    try:
        for client in clients:
            client.newest_seqs()
        body = {
            "sendID": sender,
            "recvIDs": receivers,
            "content": {"content": "to everyone"},
            "contentType": 101,
            "sessionType": 1,
        }
        answer = call(stack, "/msg/batch_send_msg", body, admin)
        assert answer["errCode"] == 0, answer
        assert answer["data"]["failedUserIDs"] == []
        results = answer["data"]["results"]
        assert sorted(r["recvID"] for r in results) == sorted(receivers)
        assert len({r["clientMsgID"] for r in results}) == 1000
        for client in clients:
            got = client.pushed_msgs(1, timeout=30) + client.pushed_msgs(10, timeout=0.5)
            assert [text_of(m) for m in got] == ["to everyone"]

        convs = [single_conversation_id(sender, r) for r in receivers]

        def stored_once_each() -> bool:
            docs = list(mongo.get_db().msg.find({"doc_id": {"$in": [f"{c}:0" for c in convs]}}))
            filled = [sum(1 for s in d["msgs"] if s.get("msg")) for d in docs]
            return len(docs) == 1000 and set(filled) == {1}

        assert eventually(stored_once_each, timeout=120)
    finally:
        for client in clients:
            client.close()


def test_a_revoke_that_died_after_writing_mongodb_sends_its_tips_on_the_retry(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, login(stack, bob) as b:
        b.newest_seqs()
        a.send_text(bob, "half revoked")
        assert eventually(lambda: b.newest_seqs().get(conv) == 1)
        b.pushed_msgs(1, timeout=20)
        # the first call wrote the slot's record, then its process died before the tips was accepted
        messages.set_revoke(conv, 1, msg_ops.revoke_record(alice, 0, "", int(time.time() * 1000)))
        body = {"conversationID": conv, "seq": 1, "userID": alice}
        assert call(stack, "/msg/revoke_msg", body, token(alice))["errCode"] == 0  # the client's retry
        tips = pushes_of_type(b, REVOKE_TIPS)
        assert [int(t["seq"]) for t in tips] == [2]
        assert b.pull_range(conv, 1, 1)["Msgs"][0]["contentType"] == REVOKE_TIPS  # the cache entry too
        # persist writes the message beside the record (it lingers for more hand-offs first)
        assert eventually(lambda: 1 in messages.find_msgs(conv, [1]))
        get_redis().delete(msg_cache_key(conv, 1))
        assert b.pull_range(conv, 1, 1)["Msgs"][0]["contentType"] == REVOKE_TIPS
        assert call(stack, "/msg/revoke_msg", body, token(alice))["errCode"] == 0
        assert pushes_of_type(b, REVOKE_TIPS, timeout=2) == []
        assert b.newest_seqs()[conv] == 2


BAD_BODIES: list[Any] = [
    [],
    "text",
    {"conversationID": 5, "seq": 1, "userID": "x"},
    {"conversationID": "si_a_b", "seq": "one", "userID": "x"},
    {"conversationID": "si_a_b", "seqs": "1,2", "userID": "x"},
    {"conversationID": "si_a_b", "seqs": [1, -2], "userID": "x"},
    {"conversationIDs": "si_a_b", "userID": "x"},
    {"conversationIDs": ["bad id"], "userID": "x"},
    {"conversationID": "si_a_b", "seqs": [1], "userID": "x", "deleteSyncOpt": "yes"},
    {"conversationID": "si_a_b", "hasReadSeq": {"$gt": 0}, "userID": "x"},
    {"sendID": "x", "recvID": "y", "content": "not an object", "contentType": 101, "sessionType": 1},
    {"sendID": "x", "recvIDs": "y", "content": {}, "contentType": 101, "sessionType": 1},
    {"sendUserID": "x", "recvUserID": "y", "recvGroupID": "g", "key": "k", "data": "d"},
    {"sendID": "x", "recvID": "y", "content": {}, "contentType": 101, "sessionType": 1, "senderPlatformID": 10**12},
    {"sendID": "x", "recvIDs": ["y"], "content": {}, "contentType": 10**20, "sessionType": 1},
    {"conversationID": "si_a_b", "seq": 10**30, "seqs": [10**30], "hasReadSeq": 10**30, "userID": "x"},
    {"conversationIDs": ["si_a_b"], "timestamp": -1, "userID": "x"},
]
ROUTES = [
    "/msg/revoke_msg",
    "/msg/delete_msgs",
    "/msg/clear_conversation_msg",
    "/msg/user_clear_all_msg",
    "/msg/delete_msg_phsical_by_seq",
    "/msg/delete_msg_physical",
    "/msg/mark_msgs_as_read",
    "/msg/mark_conversation_as_read",
    "/msg/set_conversation_has_read_seq",
    "/msg/get_conversations_has_read_and_max_seq",
    "/msg/send_msg",
    "/msg/batch_send_msg",
    "/msg/send_business_notification",
]


def test_bad_input_to_every_operation_gets_a_clear_code_never_a_crash(stack: Any, admin: str) -> None:
    user_token = token("x")
    refused = 0
    for path in ROUTES:
        for tok in (user_token, admin):
            for body in BAD_BODIES:
                answer = requests.post(
                    f"http://127.0.0.1:{stack.gateway_port}{path}",
                    data=json.dumps(body),
                    headers={"operationID": "bad-input", "token": tok},
                    timeout=30,
                ).json()
                # refused with OpenIM's codes (0 where a route finds a body valid, e.g. clearing "x"'s nothing)
                assert answer["errCode"] in (0, 1001, 1002, 1004), (path, body, answer)
                refused += answer["errCode"] != 0
        no_token = call(stack, path, {}, "")
        assert no_token["errCode"] in (1501, 1502, 1503, 1505), (path, no_token)
    assert refused >= len(ROUTES) * 2 * (len(BAD_BODIES) - 5)
    assert requests.get(f"http://127.0.0.1:{stack.gateway_port}/healthz", timeout=5).ok


def test_persist_rewrites_keep_revoke_records_del_lists_and_physical_deletes(infra: Any, uid: str) -> None:
    """MongoDB's marks outlive a redelivered persist of the same messages, also when they came first."""
    from tests.factories import stored_msg

    conv = single_conversation_id(f"p{uid}", f"q{uid}")
    msgs = [{**stored_msg(f"p{uid}", f"q{uid}", i, 1_000 + i), "seq": i} for i in range(1, 4)]
    late = {**stored_msg(f"p{uid}", f"q{uid}", 150, 2_000), "seq": 150}
    record = msg_ops.revoke_record(f"p{uid}", 0, "", 3_000)
    messages.write_runs([(conv, msgs)])
    assert messages.set_revoke(conv, 2, record)
    assert not messages.set_revoke(conv, 2, {**record, "time": 4_000})  # the first record stays
    messages.add_to_del_list(conv, [3], f"q{uid}")
    messages.add_to_del_list(conv, [3], f"q{uid}")
    assert messages.set_revoke(conv, 150, record)  # before persist wrote it (its document did not exist)
    messages.delete_physically(conv, [1])
    messages.write_runs([(conv, [*msgs, late])])  # persist again, as a redelivered batch does
    found = messages.find_msgs(conv, [1, 2, 3, 150])
    assert sorted(found) == [2, 3, 150]
    assert (found[2]["revoke"], found[3]["del_list"], found[150]["revoke"]) == (record, [f"q{uid}"], record)
    assert "revoke" not in found[3] and "del_list" not in found[2]
    messages.delete_through(conv, 2)
    assert sorted(messages.find_msgs(conv, [1, 2, 3, 150])) == [3, 150]
    assert (messages.last_seq_before(conv, 1_003), messages.last_seq_before(conv, 1_004)) == (0, 3)
    assert messages.last_seq_before(conv, 10**13) == 150


def test_admin_sends_into_a_group_and_its_members_get_it(stack: Any, admin: str, uid: str) -> None:
    owner, member = f"own{uid}", f"mem{uid}"
    group_id = f"g{uid}"
    created = rest(
        stack.gateway_port,
        "/group/create_group",
        {"ownerUserID": owner, "memberUserIDs": [member], "groupInfo": {"groupID": group_id, "groupName": "g"}},
        admin,
    )
    assert created["errCode"] == 0, created
    body = {
        "sendID": owner,
        "groupID": group_id,
        "content": {"content": "announcement"},
        "contentType": 101,
        "sessionType": 3,
    }
    with login(stack, member) as m:
        m.newest_seqs()
        answer = call(stack, "/msg/send_msg", body, admin)
        assert answer["errCode"] == 0, answer
        wanted = answer["data"]["clientMsgID"]
        pushed: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not any(p["clientMsgID"] == wanted for p in pushed) and time.monotonic() < deadline:
            pushed += m.pushed_msgs(1, timeout=max(0.0, deadline - time.monotonic()))
        got = [p for p in pushed if p["clientMsgID"] == wanted]
        assert [(text_of(g), g["groupID"], int(g["seq"])) for g in got] == [("announcement", group_id, 2)]
    assert call(stack, "/msg/send_msg", {**body, "groupID": ""}, admin)["errCode"] == 1001

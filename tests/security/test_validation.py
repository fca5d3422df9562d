"""Validation at the edge (issue 14, items 2, 4 and 6), against the real stack.

A conversation id has one reading (no `_` in user ids: refused at token mint, at connect and at send);
every field of a SendMsg is bounded (nothing of a refused message is accepted or stored); gzip frames
inflate to a bounded size without stalling the node; pulls are deduplicated and capped; clients
cannot send system messages (msgFrom 200, notification content types) nor choose their nickname.
"""

from __future__ import annotations

import base64
import gzip
import json
import threading
import time
import uuid
from typing import Any

import websocket

from app.cli.client import ImClient
from app.core import protocol, validation
from app.core.constants import LINUX
from app.core.conversation import single_conversation_id
from app.services.auth import mint_token
from tests.integration.helpers import admin_token, eventually, login, rest
from tests.integration.test_bad_input import envelope, raw_connect, read_json
from tests.integration.test_cli import run_app

ARGS_ERROR, NO_PERMISSION, CONN_ARGS_ERROR = 1001, 1002, 1602


def text_msg(sender: str, recv: str = "", group: str = "", **extra: Any) -> dict[str, Any]:
    """A SendMsg's MsgData in the JSON mapping (content is base64)."""
    return {
        "sendID": sender,
        "recvID": recv,
        "groupID": group,
        "clientMsgID": uuid.uuid4().hex,
        "sessionType": 3 if group else 1,
        "contentType": 101,
        "content": base64.b64encode(json.dumps({"content": "hi"}).encode()).decode(),
        **extra,
    }


def send_raw(ws: websocket.WebSocket, user: str, msg: dict[str, Any], incr: str = "1") -> dict[str, Any]:
    ws.send_binary(envelope(user, 1003, msg, incr=incr))
    answer = read_json(ws)
    while answer.get("reqIdentifier") == protocol.PUSH_MSG:  # e.g. the group's creation notification
        answer = read_json(ws)
    return answer


def accepted(stack: Any) -> float:
    return float(stack.metric("gateway", "msg_accepted_total"))


# --- one reading per conversation id --------------------------------------------------------------


def test_underscore_user_ids_get_no_token_no_socket_and_no_message(stack: Any, uid: str) -> None:
    """`a` -> `b_c` and `a_b` -> `c` were both `si_a_b_c`: the first writer owned the other pair's history."""
    a, b, c = f"a{uid}", f"b{uid}", f"c{uid}"
    admin = admin_token(stack.gateway_port)
    for user in (f"{b}_{c}", f"{a}_{b}", f"{a}:x", "x" * 65):
        answer = rest(stack.gateway_port, "/auth/get_user_token", {"userID": user, "platformID": LINUX}, admin)
        assert answer["errCode"] == ARGS_ERROR, answer
        registered = rest(stack.gateway_port, "/user/user_register", {"users": [{"userID": user}]}, admin)
        assert registered["errCode"] == ARGS_ERROR
    done = run_app(stack, "token", f"{b}_{c}", "5")
    assert done.returncode != 0 and "_" in done.stderr and not done.stdout.strip()
    # a token minted elsewhere does not open a socket either
    ws = raw_connect(stack, f"{a}_{b}")
    try:
        assert read_json(ws)["errCode"] == CONN_ARGS_ERROR
    finally:
        ws.close()
    # and `a` cannot write into the conversation si_a_b_c
    before = accepted(stack)
    ws = raw_connect(stack, a)
    try:
        assert send_raw(ws, a, text_msg(a, f"{b}_{c}"))["errCode"] == ARGS_ERROR
        group = text_msg(a, group=f"g_{uid}")
        assert send_raw(ws, a, group, incr="2")["errCode"] == ARGS_ERROR
    finally:
        ws.close()
    assert accepted(stack) == before
    client = login(stack, a)
    try:
        assert client.newest_seqs() == {}
        # reads name conversation ids that parse: si_a_b_c has no reading any more
        for conv in (f"si_{a}_{b}_{c}", f"si_{a}", "sg_", f"xx_{a}_{b}"):
            answer = client.request_raw(1002, {"userID": a, "seqRanges": [{"conversationID": conv, "end": 5}]})
            assert answer["errCode"] == ARGS_ERROR, conv
    finally:
        client.close()


# --- bounded fields -------------------------------------------------------------------------------


def test_oversized_or_malformed_fields_are_refused_and_nothing_is_stored(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    bad_fields: dict[str, dict[str, Any]] = {
        "ex": {"ex": "x" * (validation.MAX_EX_BYTES + 1)},
        "attachedInfo": {"attachedInfo": "x" * (validation.MAX_EX_BYTES + 1)},
        "options count": {"options": {f"k{i}": True for i in range(validation.MAX_OPTIONS + 1)}},
        "options NUL key": {"options": {"his\u0000tory": False}},
        "options $ key": {"options": {"$where": True}},
        "options dotted key": {"options": {"a.b": True}},
        "atUserIDList count": {"atUserIDList": [f"u{i}" for i in range(validation.MAX_AT_USERS + 1)]},
        "atUserIDList id": {"atUserIDList": ["b_c"]},
        "nickname": {"senderNickname": "n" * (validation.MAX_NICKNAME_CHARS + 1)},
        "face URL": {"senderFaceURL": "u" * (validation.MAX_FACE_URL_CHARS + 1)},
        "offlinePushInfo": {"offlinePushInfo": {"title": "t", "desc": "d" * 5000}},
        "clientMsgID": {"clientMsgID": "c" * 65},
        "recvID": {"recvID": "r" * 65},
    }
    bystander = login(stack, bob)
    before = accepted(stack)
    ws = raw_connect(stack, alice)
    try:
        for n, (name, fields) in enumerate(bad_fields.items()):
            answer = send_raw(ws, alice, text_msg(alice, bob, **fields), incr=str(n))
            assert (answer["errCode"], answer["msgIncr"]) == (ARGS_ERROR, str(n)), name
        # the socket is still served: a well-formed message goes through
        assert send_raw(ws, alice, text_msg(alice, bob, clientMsgID="good"), incr="ok")["errCode"] == 0
    finally:
        ws.close()
    try:
        assert accepted(stack) == before + 1
        [pushed] = bystander.pushed_msgs(1, timeout=20)
        assert pushed["clientMsgID"] == "good"
        conv = single_conversation_id(alice, bob)
        assert eventually(lambda: bystander.newest_seqs().get(conv) == 1)
        assert [m["clientMsgID"] for m in bystander.pull_range(conv, 1, 10)["Msgs"]] == ["good"]
    finally:
        bystander.close()


def test_gzip_bomb_is_refused_without_stalling_the_node(stack: Any, uid: str) -> None:
    """50 MB of JSON in a 50 KB frame: refused after 200 KB of output, while another client is answered."""
    user = f"bomb{uid}"
    bomb_msg = text_msg(user, f"peer{uid}", ex="A" * 50_000_000)
    bomb = gzip.compress(envelope(user, 1003, bomb_msg, incr="bomb"), compresslevel=9)
    assert len(bomb) < protocol.MAX_FRAME_BYTES
    ws = raw_connect(stack, user, compression="gzip")
    other = raw_connect(stack, f"other{uid}")
    answers: list[tuple[float, dict[str, Any]]] = []

    def bomber() -> None:
        start = time.monotonic()
        ws.send_binary(bomb)
        _, data = ws.recv_data()
        answers.append((time.monotonic() - start, json.loads(gzip.decompress(data))))

    try:
        thread = threading.Thread(target=bomber)
        thread.start()
        pings = []
        for _ in range(5):  # the other client's pings are answered at once meanwhile
            start = time.monotonic()
            other.send(json.dumps({"type": "ping"}))
            assert json.loads(other.recv()) == {"type": "pong", "body": None}
            pings.append(time.monotonic() - start)
        thread.join(timeout=20)
        [(took, answer)] = answers
        # not correlated (msgIncr is inside what was never inflated): refused as a data error
        assert (answer["errCode"], answer["reqIdentifier"]) == (ARGS_ERROR, protocol.DATA_ERROR)
        assert "too large after decompression" in answer["errMsg"]
        assert took < 2.0 and max(pings) < 1.0, (took, pings)
        # the bomber's connection survives
        ws.send_binary(gzip.compress(envelope(user, 1001, {"userID": user}, incr="after")))
        _, data = ws.recv_data()
        after = json.loads(gzip.decompress(data))
        assert (after["errCode"], after["msgIncr"]) == (0, "after")
    finally:
        ws.close()
        other.close()


# --- pulls ------------------------------------------------------------------------------------------


def test_a_pull_repeating_one_conversation_is_answered_once(stack: Any, uid: str) -> None:
    alice, bob = f"a{uid}", f"b{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as sender:
        for i in range(3):
            sender.send_text(bob, f"m{i}")
        assert eventually(lambda: sender.newest_seqs().get(conv) == 3)
    # protobuf (sdkType js), gzip: 5000 ranges fit a frame and inflate under the limit
    client = ImClient(stack.ws_url, alice, LINUX, mint_token(alice, LINUX), sdk_type="js", gzip=True, timeout=30)
    try:
        ranges = [{"conversationID": conv, "end": 3} for _ in range(5000)]
        answer = client.request_raw(1002, {"userID": alice, "seqRanges": ranges})
        assert answer["errCode"] == 0, answer
        assert list(answer["data"]["msgs"]) == [conv]
        assert [int(m["seq"]) for m in answer["data"]["msgs"][conv]["Msgs"]] == [1, 2, 3]
        lists = [{"conversationID": conv, "seqs": [1, 2, 3]} for _ in range(4000)]  # 4000 fit the inflated limit
        answer = client.request_raw(1005, {"userID": alice, "conversations": lists})
        assert answer["errCode"] == 0, answer
        assert [int(m["seq"]) for m in answer["data"]["msgs"][conv]["Msgs"]] == [1, 2, 3]
        # distinct conversations and answer size are capped
        many = [{"conversationID": f"si_{alice}_x{i}", "end": 3} for i in range(validation.MAX_PULL_CONVERSATIONS + 1)]
        assert client.request_raw(1002, {"userID": alice, "seqRanges": many})["errCode"] == ARGS_ERROR
        many_ids = [f"si_{alice}_x{i}" for i in range(validation.MAX_PULL_CONVERSATIONS + 1)]
        assert client.request_raw(1006, {"userID": alice, "conversationIDs": many_ids})["errCode"] == ARGS_ERROR
        assert client.request_raw(1007, {"userID": alice, "conversationIDs": many_ids})["errCode"] == ARGS_ERROR
        subscribe = {"subscribeUserID": [f"u{i}" for i in range(validation.MAX_IDS_PER_REQUEST + 1)]}
        assert client.request_raw(2005, subscribe)["errCode"] == ARGS_ERROR
        assert client.request_raw(2005, {"subscribeUserID": ["b_c"]})["errCode"] == ARGS_ERROR
    finally:
        client.close()


# --- forged system messages and profiles --------------------------------------------------------------


def test_forged_system_messages_are_refused_and_never_delivered(stack: Any, uid: str) -> None:
    owner, member = f"own{uid}", f"mem{uid}"
    group_id = f"grp{uid}"
    admin = admin_token(stack.gateway_port)
    body = {"ownerUserID": owner, "memberUserIDs": [member], "groupInfo": {"groupID": group_id}}
    assert rest(stack.gateway_port, "/group/create_group", body, admin)["errCode"] == 0
    victim = login(stack, member)
    before = accepted(stack)
    ws = raw_connect(stack, owner)
    try:
        forged = {
            "msgFrom 200 in a group": text_msg(owner, group=group_id, msgFrom=200),
            "member kicked": text_msg(owner, group=group_id, contentType=1508),
            "group dismissed": text_msg(owner, group=group_id, contentType=1511, msgFrom=200),
            "msgFrom 200 single": text_msg(owner, member, msgFrom=200),
            "friend notification": text_msg(owner, member, contentType=1204),
            "receipt for another user": text_msg(
                owner,
                member,
                contentType=2200,
                content=base64.b64encode(json.dumps({"markAsReadUserID": member, "hasReadSeq": 1}).encode()).decode(),
            ),
            "receipt for another conversation": text_msg(
                owner,
                member,
                contentType=2200,
                content=base64.b64encode(json.dumps({"conversationID": "si_x_y", "hasReadSeq": 1}).encode()).decode(),
            ),
        }
        for n, (name, msg) in enumerate(forged.items()):
            answer = send_raw(ws, owner, msg, incr=str(n))
            assert (answer["errCode"], answer["msgIncr"]) == (NO_PERMISSION, str(n)), name
        assert send_raw(ws, owner, text_msg(owner, group=group_id, clientMsgID=f"real{uid}"), incr="r")["errCode"] == 0
    finally:
        ws.close()
    try:
        assert accepted(stack) == before + 1
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not any(m.get("clientMsgID") == f"real{uid}" for m in got) and time.monotonic() < deadline:
            got.extend(victim.pushed_msgs(1, timeout=max(0.1, deadline - time.monotonic())))
        assert any(m.get("clientMsgID") == f"real{uid}" for m in got)
        forged_ids = {m["clientMsgID"] for m in forged.values()}
        assert not forged_ids & {m.get("clientMsgID") for m in got}
        # the only system message the member got is the server's own group creation notice
        # (a group notification is pushed under both sg_ and n_ conversations: one clientMsgID)
        assert {(m["clientMsgID"], int(m["contentType"])) for m in got if int(m.get("msgFrom", 0)) == 200} == {
            (next(m["clientMsgID"] for m in got if int(m["contentType"]) == 1501), 1501)
        }
        assert int(next(m for m in got if m.get("clientMsgID") == f"real{uid}")["msgFrom"]) == 100
    finally:
        victim.close()


def test_sender_nickname_and_face_come_from_the_server(stack: Any, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    admin = admin_token(stack.gateway_port)
    users = [{"userID": alice, "nickname": f"Alice {uid}", "faceURL": f"https://faces.example/{alice}.png"}]
    assert rest(stack.gateway_port, "/user/user_register", {"users": users}, admin)["errCode"] == 0
    receiver = login(stack, bob)
    ws = raw_connect(stack, alice)
    try:
        forged = text_msg(alice, bob, senderNickname="System Administrator", senderFaceURL="https://evil.example/x.png")
        assert send_raw(ws, alice, forged)["errCode"] == 0
    finally:
        ws.close()
    try:
        [pushed] = receiver.pushed_msgs(1, timeout=20)
        expected = (f"Alice {uid}", f"https://faces.example/{alice}.png")
        assert (pushed["senderNickname"], pushed["senderFaceURL"]) == expected
        conv = single_conversation_id(alice, bob)
        assert eventually(lambda: receiver.newest_seqs().get(conv) == 1)
        [stored] = receiver.pull_range(conv, 1, 1)["Msgs"]
        assert (stored["senderNickname"], stored["senderFaceURL"]) == expected
    finally:
        receiver.close()

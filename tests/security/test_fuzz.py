"""P7/P8 fuzzing of SendMsg's MsgData, in both encodings (sdkType json and js), over real connections.

tests/integration/test_frame_fuzz.py fuzzes the frames (bytes, JSON, envelopes with junk types). This
module fuzzes what gets past the frame: well-typed envelopes whose MsgData has hostile values (ids
with `_`, huge or odd fields, options keys MongoDB refuses, server origins, read receipts for others).
Every frame gets an answer with an OpenIM code (never 500); what is accepted obeys the edge's rules;
afterwards the gateway and workers are up and another user's message is still delivered.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from google.protobuf import json_format
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from app.cli.client import ImClient, connect_url
from app.core import protocol
from app.core.constants import LINUX
from app.core.conversation import single_conversation_id
from app.proto import sdkws_pb2 as pb
from app.services.auth import mint_token
from tests.integration.helpers import eventually

USERS = {protocol.SDK_JSON: "msgfuzzjson", protocol.SDK_JS: "msgfuzzjs"}  # one user each: no kicks, no syncs
USER, OTHER = USERS.values()
PEER = "msgfuzzpeer"
OPENIM_CODES = {0, 1001, 1002, 1004, 1201, 1202, 1203, 1204}


def sized(char: str, sizes: list[int]) -> st.SearchStrategy[str]:
    return st.sampled_from(sizes).map(lambda n: char * n)


ids = st.sampled_from(
    [USER, OTHER, PEER, "", "b_c", "a:b", "{x}", "a b", "x" * 64, "x" * 65, "AtAllTag", "u\x00"]
) | st.text(max_size=70)
option_keys = st.sampled_from(["history", "offlinePush", "$set", "a.b", "his\x00tory", "", "k" * 65]) | st.text(
    max_size=70
)


def receipt(draw_body: dict[str, Any]) -> bytes:
    return json.dumps(draw_body).encode()


contents = st.one_of(
    st.binary(max_size=200),
    st.just(b'{"content":"hi"}'),
    st.fixed_dictionaries(
        {"hasReadSeq": st.integers(-2, 5) | st.text(max_size=3)},
        optional={
            "markAsReadUserID": st.sampled_from([USER, OTHER, PEER, ""]),
            "conversationID": st.sampled_from([single_conversation_id(USER, PEER), "si_x_y", ""]),
            "seqs": st.lists(st.integers(0, 5), max_size=3) | st.just([[1]]),
            "deep": st.recursive(st.integers(), lambda c: st.lists(c, max_size=2), max_leaves=20),
        },
    ).map(receipt),
    st.integers(1, 2000).map(lambda n: b'{"hasReadSeq":1,"x":' + b"[" * n + b"]" * n + b"}"),
)

# Each example is a well-formed text message with up to three fields replaced by a drawn value, so
# that most hostile values meet an otherwise valid message (and some messages are accepted).
FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "clientMsgID": st.uuids().map(lambda u: u.hex) | st.text(max_size=70),
    "sessionType": st.sampled_from([1, 3, 0, 2, 4, 99]),
    "contentType": st.sampled_from([101, 110, 113, 120, 2200, 1501, 1508, 1204, 0, 100, 999, 1000, 5001])
    | st.integers(-(2**31), 2**31 - 1),
    "content": contents,
    "sendID": ids,
    "recvID": ids,
    "groupID": st.sampled_from(["", "nogroup", "g_1", "x" * 65]) | st.text(max_size=70),
    "serverMsgID": st.text(max_size=70),
    "senderNickname": st.text(max_size=20) | sized("n", [255, 256]),
    "senderFaceURL": st.text(max_size=20) | sized("u", [1024, 1025]),
    "msgFrom": st.sampled_from([0, 100, 200, 7]),
    "seq": st.integers(-(2**63), 2**63 - 1),
    "sendTime": st.integers(-(2**63), 2**63 - 1),
    "createTime": st.integers(-(2**63), 2**63 - 1),
    "status": st.integers(-5, 10),
    "options": st.dictionaries(option_keys, st.booleans(), max_size=40),
    "atUserIDList": st.lists(ids, max_size=4) | st.just(["u"] * 501),
    "attachedInfo": st.text(max_size=30) | sized("a", [8192, 8193]),
    "ex": st.text(max_size=30) | sized("e", [8192, 8193]),
    "offlinePushInfo": st.builds(
        pb.OfflinePushInfo,
        title=st.text(max_size=20) | sized("t", [1025]),
        desc=st.text(max_size=20) | sized("d", [4097]),
        ex=st.text(max_size=20) | sized("e", [8193]),
        iOSPushSound=st.text(max_size=10),
    ),
}


@st.composite
def msg_fields(draw: st.DrawFn, sender: str) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "sendID": sender,
        "recvID": PEER,
        "clientMsgID": draw(st.uuids()).hex,
        "sessionType": 1,
        "contentType": 101,
        "content": b'{"content":"fuzz"}',
    }
    for name in draw(st.lists(st.sampled_from(sorted(FIELDS)), max_size=3, unique=True)):
        fields[name] = draw(FIELDS[name])
    return fields


@st.composite
def send_frames(draw: st.DrawFn, sdk_type: str) -> tuple[bytes, pb.MsgData | None]:
    """(frame, the MsgData it carries, or None when the data is not a MsgData at all)."""
    operation_id = draw(st.text(max_size=20) | sized("o", [128, 129]))
    if sdk_type == protocol.SDK_JS and draw(st.integers(0, 9)) == 0:
        data: Any = base64.b64encode(draw(st.binary(max_size=200))).decode()  # arbitrary protobuf bytes
        msg = None
    else:
        msg = pb.MsgData(**draw(msg_fields(USERS[sdk_type])))
        if sdk_type == protocol.SDK_JS:
            data = protocol.encode_data(protocol.SDK_JS, msg)
        else:
            data = json_format.MessageToDict(msg)
    envelope = {
        "reqIdentifier": 1003,
        "sendID": USERS[sdk_type],
        "operationID": operation_id,
        "msgIncr": "m",
        "data": data,
    }
    frame = json.dumps(envelope).encode()
    assume(len(frame) <= protocol.MAX_FRAME_BYTES)  # a larger frame closes the socket (test_bad_input)
    return frame, msg


@pytest.fixture(scope="module")
def fuzz_node(stack: Any) -> Iterator[Any]:
    """Its own gateway node without a rate limit, so every frame reaches validation."""
    node = stack.start_gateway("gateway-msgfuzz", {"GATEWAY_RATE_LIMIT": "0"})
    yield node
    stack.terminate("gateway-msgfuzz")


def open_socket(node: Any, sdk_type: str) -> websocket.WebSocket:
    user = USERS[sdk_type]
    url = connect_url(node.ws_url, user, LINUX, mint_token(user, LINUX), sdkType=sdk_type)
    return websocket.create_connection(url, timeout=20)


@pytest.fixture(scope="module")
def sockets(fuzz_node: Any) -> Iterator[dict[str, websocket.WebSocket]]:
    opened = {sdk: open_socket(fuzz_node, sdk) for sdk in USERS}  # the JSON envelopes (gob: test_gob_clients)
    yield opened
    for ws in opened.values():
        ws.close()


def accepted_rules_hold(msg: pb.MsgData, sender: str) -> None:
    """What the gateway accepted obeys the edge's rules, checked here independently of app/core/validation.py."""
    assert msg.msgFrom in (0, 100)
    assert 100 < msg.contentType < 1000 or msg.contentType == 2200
    assert all(k and len(k) <= 64 and not k.startswith("$") and "." not in k and "\x00" not in k for k in msg.options)
    for user_id in [msg.recvID if msg.sessionType == 1 else msg.groupID, *msg.atUserIDList]:
        assert 0 < len(user_id) <= 64 and not set(user_id) & set("_:{} \x00")
    assert len(msg.ex) <= 8192 and len(msg.attachedInfo) <= 8192 and len(msg.senderNickname) <= 255
    if msg.contentType == 2200:
        body = json.loads(msg.content)
        assert body.get("markAsReadUserID", sender) in (sender, "")
        assert body.get("conversationID", "") in ("", single_conversation_id(sender, msg.recvID))


def fuzz_one(ws: websocket.WebSocket, sender: str, frame: tuple[bytes, pb.MsgData | None]) -> None:
    payload, msg = frame
    ws.send_binary(payload)
    answer = json.loads(ws.recv())
    while answer.get("reqIdentifier") == protocol.PUSH_MSG:  # a message the fuzzer sent to itself
        answer = json.loads(ws.recv())
    assert answer["msgIncr"] == "m" and answer["reqIdentifier"] == 1003, answer
    assert answer["errCode"] in OPENIM_CODES, answer
    event(f"errCode {answer['errCode']}")  # --hypothesis-show-statistics: how much got through
    if answer["errCode"] == 0:
        assert msg is not None
        accepted_rules_hold(msg, sender)


FUZZ_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ_SETTINGS
@given(frame=send_frames(protocol.SDK_JSON))
def test_msgdata_fuzz_json(sockets: dict[str, websocket.WebSocket], frame: tuple[bytes, pb.MsgData | None]) -> None:
    fuzz_one(sockets[protocol.SDK_JSON], USERS[protocol.SDK_JSON], frame)


@FUZZ_SETTINGS
@given(frame=send_frames(protocol.SDK_JS))
def test_msgdata_fuzz_js(sockets: dict[str, websocket.WebSocket], frame: tuple[bytes, pb.MsgData | None]) -> None:
    fuzz_one(sockets[protocol.SDK_JS], USERS[protocol.SDK_JS], frame)


def test_after_the_msgdata_fuzz_other_users_still_chat(
    stack: Any, fuzz_node: Any, sockets: dict[str, websocket.WebSocket], uid: str
) -> None:
    for sdk_type, ws in sockets.items():  # the fuzzing sockets are still open and answered
        ws.send_binary(json.dumps({"reqIdentifier": 1001, "sendID": USERS[sdk_type], "msgIncr": "z"}).encode())
        answer = json.loads(ws.recv())
        while answer.get("reqIdentifier") == protocol.PUSH_MSG:
            answer = json.loads(ws.recv())
        assert (answer["errCode"], answer["msgIncr"]) == (0, "z")
    alice_id, bob_id = f"a{uid}", f"b{uid}"
    alice = ImClient(stack.ws_url, alice_id, LINUX, mint_token(alice_id, LINUX))
    bob = ImClient(fuzz_node.ws_url, bob_id, LINUX, mint_token(bob_id, LINUX), sdk_type=protocol.SDK_JS)
    try:
        alice.send_text(bob_id, "still here")
        [pushed] = bob.pushed_msgs(1, timeout=30)
        assert pushed["sendID"] == alice_id
        conv = single_conversation_id(alice_id, bob_id)
        assert eventually(lambda: bob.newest_seqs().get(conv) == 1)
        assert len(bob.pull_range(conv, 1, 1)["Msgs"]) == 1
    finally:
        alice.close()
        bob.close()
    assert all(stack.core_alive("gateway-msgfuzz").values()), stack.alive()

"""One schema, two encodings: sdkType=json and sdkType=js (base64 protobuf) answer alike; gzip both ways."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
import websocket

from app.cli.client import ImClient, connect_url, text_of
from app.core.conversation import single_conversation_id
from app.proto import sdkws_pb2 as pb
from app.services.auth import mint_token
from tests.integration.helpers import eventually


def connect(stack: Any, user: str, platform: int, sdk_type: str, gzip: bool = False) -> ImClient:
    return ImClient(stack.ws_url, user, platform, mint_token(user, platform), sdk_type=sdk_type, gzip=gzip)


@pytest.mark.parametrize("gzip", [False, True])
def test_js_and_json_answer_every_request_alike(stack: Any, uid: str, gzip: bool) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    sender = connect(stack, alice, 7, "js", gzip)
    as_json = connect(stack, bob, 5, "json", gzip)
    as_js = connect(stack, bob, 1, "js", gzip)
    try:
        acks = [sender.send_text(bob, f"hello {i}") for i in range(3)]
        assert all(a["serverMsgID"] and int(a["sendTime"]) > 0 for a in acks)
        for receiver in (as_json, as_js):
            pushed = receiver.pushed_msgs(3, timeout=30)
            assert [text_of(m) for m in pushed] == ["hello 0", "hello 1", "hello 2"]
        assert eventually(lambda: as_json.newest_seqs().get(conv) == 3)
        as_js.send(alice, 2200, json.dumps({"hasReadSeq": 2}))
        assert eventually(lambda: as_json.read_state([conv])[conv]["hasReadSeq"] == 2)

        requests: list[tuple[int, dict[str, Any]]] = [
            (1001, {"userID": bob}),
            (1002, {"userID": bob, "seqRanges": [{"conversationID": conv, "begin": 1, "end": 3, "num": 10}]}),
            (1005, {"userID": bob, "conversations": [{"conversationID": conv, "seqs": [3, 1]}]}),
            (1006, {"userID": bob, "conversationIDs": [conv]}),
            (1007, {"userID": bob, "conversationIDs": [conv]}),
            (2005, {"subscribeUserID": [alice]}),
        ]
        for req_id, data in requests:
            answers = [client.request_raw(req_id, data) for client in (as_json, as_js)]
            assert [a["errCode"] for a in answers] == [0, 0], req_id
            assert answers[0]["data"] == answers[1]["data"], req_id
            assert answers[0]["data"], req_id
        # 2004's answer is an empty message in both encodings
        answers = [c.request_raw(2004, {"userID": bob, "isBackground": False}) for c in (as_json, as_js)]
        assert [(a["errCode"], a["data"] or {}) for a in answers] == [(0, {}), (0, {})]
        # errors read alike too
        bad = [
            c.request_raw(1002, {"seqRanges": [{"conversationID": "si_x_y", "begin": 1, "end": 1}]})
            for c in (as_json, as_js)
        ]
        assert [b["errCode"] for b in bad] == [1002, 1002]
    finally:
        for client in (sender, as_json, as_js):
            client.close()


def test_invalid_base64_or_protobuf_in_js_mode(stack: Any, uid: str) -> None:
    user = f"u{uid}"
    ws = websocket.create_connection(connect_url(stack.ws_url, user, 5, mint_token(user, 5), sdkType="js"), timeout=10)
    try:
        for incr, data in (("1", "***not base64***"), ("2", base64.b64encode(b"\xff\xff\xff").decode()), ("3", {})):
            envelope = {"reqIdentifier": 1003, "sendID": user, "operationID": "op", "msgIncr": incr, "data": data}
            ws.send_binary(json.dumps(envelope).encode())
            answer = json.loads(ws.recv())
            assert (answer["msgIncr"], answer["errCode"]) == (incr, 1001)
        valid = base64.b64encode(pb.GetMaxSeqReq(userID=user).SerializeToString()).decode()
        ws.send_binary(json.dumps({"reqIdentifier": 1001, "sendID": user, "msgIncr": "4", "data": valid}).encode())
        answer = json.loads(ws.recv())
        assert (answer["msgIncr"], answer["errCode"]) == ("4", 0)
        assert pb.GetMaxSeqResp.FromString(base64.b64decode(answer["data"])) == pb.GetMaxSeqResp()
    finally:
        ws.close()

"""Hostile or broken clients get an errCode; the connection and the gateway survive (P7)."""

from __future__ import annotations

import json
from typing import Any

import pytest
import requests
import websocket

from app.cli.client import connect_url
from app.core.constants import LINUX
from app.services.auth import mint_token
from tests.integration.helpers import login


def raw_connect(stack: Any, user: str, token: str | None = None, **extra: str) -> websocket.WebSocket:
    url = connect_url(stack.ws_url, user, LINUX, mint_token(user, LINUX) if token is None else token, **extra)
    return websocket.create_connection(url, timeout=10)


def read_json(ws: websocket.WebSocket) -> dict[str, Any]:
    opcode, data = ws.recv_data()
    body: dict[str, Any] = json.loads(data)
    return body


def assert_gateway_serves(stack: Any, uid: str) -> None:
    """A fresh, well-behaved client still gets answers."""
    client = login(stack, f"probe{uid}")
    try:
        assert isinstance(client.newest_seqs(), dict)
    finally:
        client.close()
    assert requests.get(f"http://127.0.0.1:{stack.gateway_port}/healthz", timeout=5).json()["status"] == "ok"


def envelope(user: str, req: int, data: Any = None, incr: str = "1", send_id: str | None = None) -> bytes:
    return json.dumps(
        {"reqIdentifier": req, "sendID": send_id or user, "operationID": "op", "msgIncr": incr, "data": data}
    ).encode()


def test_frame_that_is_not_json(stack: Any, uid: str) -> None:
    ws = raw_connect(stack, f"u{uid}")
    try:
        ws.send_binary(b"\x00\x01 definitely not json")
        body = read_json(ws)
        assert body["errCode"] == 1001
        assert body["reqIdentifier"] == 3001
        # the same connection keeps working
        ws.send_binary(envelope(f"u{uid}", 1001, {"userID": f"u{uid}"}, incr="2"))
        body = read_json(ws)
        assert (body["errCode"], body["msgIncr"], body["reqIdentifier"]) == (0, "2", 1001)
    finally:
        ws.close()
    assert_gateway_serves(stack, uid)


def test_unknown_req_identifier(stack: Any, uid: str) -> None:
    ws = raw_connect(stack, f"u{uid}")
    try:
        ws.send_binary(envelope(f"u{uid}", 9999, incr="7"))
        body = read_json(ws)
        assert (body["errCode"], body["reqIdentifier"], body["msgIncr"]) == (1001, 9999, "7")
        assert "unknown reqIdentifier" in body["errMsg"]
    finally:
        ws.close()


def test_wrong_field_types(stack: Any, uid: str) -> None:
    ws = raw_connect(stack, f"u{uid}")
    try:
        ws.send_binary(json.dumps({"reqIdentifier": "1003", "msgIncr": "3"}).encode())
        assert read_json(ws)["errCode"] == 1001
        ws.send_binary(envelope(f"u{uid}", 1003, data="not an object", incr="4"))
        body = read_json(ws)
        assert (body["errCode"], body["msgIncr"]) == (1001, "4")
        ws.send_binary(envelope(f"u{uid}", 1003, data={"recvID": "x", "seq": "NaN-ish"}, incr="5"))
        assert read_json(ws)["errCode"] == 1001
    finally:
        ws.close()


def test_forged_send_id(stack: Any, uid: str) -> None:
    me, victim = f"me{uid}", f"victim{uid}"
    accepted_before = stack.metric("gateway", "msg_accepted_total")
    ws = raw_connect(stack, me)
    try:
        ws.send_binary(envelope(me, 1001, {"userID": victim}, send_id=victim))
        assert read_json(ws)["errCode"] == 1002
        forged_msg = {
            "sendID": victim,
            "recvID": me,
            "clientMsgID": "c",
            "sessionType": 1,
            "contentType": 101,
            "content": "aGk=",
        }
        ws.send_binary(envelope(me, 1003, forged_msg, incr="2"))
        body = read_json(ws)
        assert (body["errCode"], body["msgIncr"]) == (1002, "2")
        ws.send_binary(envelope(me, 1001, {"userID": victim}, incr="3"))
        assert read_json(ws)["errCode"] == 1002
    finally:
        ws.close()
    # nothing was enqueued: no message accepted, no conversation for either user
    assert stack.metric("gateway", "msg_accepted_total") == accepted_before
    for user in (me, victim):
        client = login(stack, user)
        try:
            assert client.newest_seqs() == {}
        finally:
            client.close()
    assert_gateway_serves(stack, uid)


@pytest.mark.parametrize(
    "case",
    ["missing", "garbage", "expired", "other_user", "other_platform", "wrong_secret"],
)
def test_bad_token_is_refused_with_an_error(stack: Any, uid: str, case: str) -> None:
    user = f"u{uid}"
    token = {
        "missing": "",
        "garbage": "abc.def.ghi",
        "expired": mint_token(user, LINUX, ttl_seconds=-10),
        "other_user": mint_token(f"someone{uid}", LINUX),
        "other_platform": mint_token(user, 1),
        "wrong_secret": mint_token(user, LINUX, secret="not-the-server-secret-0123456789abcdef"),
    }[case]
    ws = raw_connect(stack, user, token=token)
    try:
        body = read_json(ws)
        assert body["errCode"] in (1501, 1502, 1503)
        if case == "expired":
            assert body["errCode"] == 1501
        # then the server closes the socket
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError, OSError)):
            for _ in range(3):
                opcode, _data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise websocket.WebSocketConnectionClosedException("closed")
    finally:
        ws.close()
    assert_gateway_serves(stack, uid)


def test_oversized_frame_closes_only_that_connection(stack: Any, uid: str) -> None:
    ws = raw_connect(stack, f"big{uid}")
    bystander = login(stack, f"bystander{uid}")
    try:
        ws.send_binary(b"x" * 60_000)
        with pytest.raises((websocket.WebSocketException, ConnectionError, OSError)):
            for _ in range(3):
                opcode, _data = ws.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise websocket.WebSocketConnectionClosedException("closed")
        assert isinstance(bystander.newest_seqs(), dict)
    finally:
        ws.close()
        bystander.close()
    assert_gateway_serves(stack, uid)


def test_ping_text_frame_gets_pong(stack: Any, uid: str) -> None:
    ws = raw_connect(stack, f"u{uid}")
    try:
        ws.send(json.dumps({"type": "ping"}))
        opcode, data = ws.recv_data()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert json.loads(data) == {"type": "pong", "body": None}
        # the body comes back, as OpenIM's gateway echoes it (the core SDK's web build reads it)
        ws.send(json.dumps({"type": "ping", "body": "hb-1"}))
        assert json.loads(ws.recv()) == {"type": "pong", "body": "hb-1"}
    finally:
        ws.close()


def test_is_msg_resp_gets_success_frame(stack: Any, uid: str) -> None:
    ws = raw_connect(stack, f"u{uid}", isMsgResp="true")
    try:
        assert read_json(ws)["errCode"] == 0
    finally:
        ws.close()

"""P7: a Hypothesis-generated stream of malformed frames against a live gateway.

Every frame gets exactly one answer, a JSON object with an integer errCode that echoes the frame's
msgIncr when it had one; the gateway stays up; and afterwards a well-behaved client on another
connection still sends and receives.
"""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
import websocket
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli.client import ImClient, connect_url
from app.core.constants import LINUX
from app.services.auth import mint_token

USER = "fuzzer"
REQ_CODES = [1001, 1002, 1003, 1004, 1005, 1006, 1007, 2001, 2002, 2003, 2004, 2005, 3001]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)

msg_data = st.fixed_dictionaries(
    {},
    optional={
        "sendID": st.sampled_from([USER, "someone-else", ""]) | json_values,
        "recvID": st.text(max_size=70) | json_values,
        "clientMsgID": st.text(max_size=80) | json_values,
        "sessionType": st.integers(-5, 10) | json_values,
        "contentType": st.integers(-5, 3000) | json_values,
        "content": st.binary(max_size=64).map(lambda b: base64.b64encode(b).decode()) | json_values,
        "seq": st.integers(-(2**64), 2**64) | json_values,
        "options": st.dictionaries(st.text(max_size=12), st.booleans() | json_values, max_size=3),
    },
)

envelopes = st.fixed_dictionaries(
    {},
    optional={
        "reqIdentifier": st.sampled_from(REQ_CODES) | st.integers() | json_values,
        "sendID": st.sampled_from([USER, "victim"]) | json_values,
        "operationID": st.text(max_size=20) | json_values,
        "msgIncr": st.text(max_size=20) | json_values,
        "token": st.text(max_size=20),
        "data": msg_data | json_values | st.text(max_size=40),
    },
)

frames = st.one_of(
    st.binary(max_size=300).map(lambda b: ("binary", b)),
    json_values.map(lambda v: ("binary", json.dumps(v).encode())),
    envelopes.map(lambda e: ("binary", json.dumps(e).encode())),
    envelopes.map(lambda e: ("text", json.dumps(e))),
    envelopes.map(lambda e: ("binary", gzip.compress(json.dumps(e).encode()))),  # gzip on a plain socket
    st.text(max_size=100).map(lambda t: ("text", t)),
)


@pytest.fixture(scope="module")
def fuzz_node(stack: Any) -> Iterator[Any]:
    """Its own gateway node, without a rate limit, so every frame reaches the request handling."""
    node = stack.start_gateway("gateway-fuzz", {"GATEWAY_RATE_LIMIT": "0"})
    yield node
    stack.terminate("gateway-fuzz")


class FuzzSocket:
    """The fuzzer's connection; a frame that happens to be a valid 2003 logout ends it, so reopen."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.ws = self._open()

    def _open(self) -> websocket.WebSocket:
        # a fresh token each time: a 2003 logout revokes the one it was sent with
        url = connect_url(self.base_url, USER, LINUX, mint_token(USER, LINUX))
        return websocket.create_connection(url, timeout=10)

    def exchange(self, kind: str, payload: bytes | str) -> dict[str, Any]:
        if kind == "text":
            self.ws.send(payload)
        else:
            assert isinstance(payload, bytes), f"a binary frame carries bytes, not {type(payload).__name__}"
            self.ws.send_binary(payload)
        answer: dict[str, Any] = json.loads(self.ws.recv())
        if answer.get("reqIdentifier") == 2003 and answer.get("errCode") == 0:
            self.ws.close()
            self.ws = self._open()
        return answer


@pytest.fixture(scope="module")
def fuzz_socket(fuzz_node: Any) -> Iterator[FuzzSocket]:
    sock = FuzzSocket(fuzz_node.ws_url)
    yield sock
    sock.ws.close()


def expected_incr(kind: str, payload: bytes | str) -> str | None:
    try:
        body = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(body, dict) and isinstance(body.get("msgIncr"), str) and body.get("type") != "ping":
        return str(body["msgIncr"])
    return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=frames)
def test_malformed_frames_each_get_one_error_answer(fuzz_socket: FuzzSocket, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    answer = fuzz_socket.exchange(kind, payload)
    if answer.get("type") == "pong":
        return
    assert isinstance(answer["errCode"], int)
    incr = expected_incr(kind, payload)
    if incr is not None:
        assert answer["msgIncr"] == incr
    if answer["errCode"] == 0:
        # only a well-formed request of the connection's own user can succeed
        body = json.loads(gzip.decompress(payload) if kind == "binary" and payload[:2] == b"\x1f\x8b" else payload)
        assert body.get("sendID") == USER
        assert answer["reqIdentifier"] in (1001, 1002, 1003, 1005, 1006, 1007, 2003, 2004, 2005)
        data = body.get("data")
        if answer["reqIdentifier"] == 1003:
            assert isinstance(data, dict) and data.get("sendID", USER) in (USER, "")


def test_after_the_fuzz_the_gateway_still_chats(stack: Any, fuzz_node: Any, fuzz_socket: FuzzSocket, uid: str) -> None:
    # the fuzzing socket itself is still open and answered
    last = fuzz_socket.exchange("binary", json.dumps({"reqIdentifier": 1001, "sendID": USER, "msgIncr": "z"}).encode())
    assert (last["errCode"], last["msgIncr"]) == (0, "z")
    alice_id, bob_id = f"a{uid}", f"b{uid}"
    alice = ImClient(fuzz_node.ws_url, alice_id, LINUX, mint_token(alice_id, LINUX))
    bob = ImClient(fuzz_node.ws_url, bob_id, LINUX, mint_token(bob_id, LINUX))
    try:
        alice.send_text(bob_id, "still here")
        assert len(bob.pushed_msgs(1, timeout=20)) == 1
    finally:
        alice.close()
        bob.close()
    assert stack.alive()["gateway-fuzz"]

"""openim-sdk-core's envelope: a connection without sdkType (or sdkType=go) speaks Go gob, as OpenIM's
gateway does (DESIGN.md section 6): GeneralWsReq in, GeneralWsResp out, `Data` the raw protobuf, every
frame gzipped when compression=gzip. Nothing but binary gob frames reaches it after the connection
answer, except the pong to its text ping; a frame we cannot decode gets a gob 3001 answer and the
connection goes on."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import websocket
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.cli.client import ImClient, text_of
from app.core import gob, protocol
from app.core.constants import LINUX, SINGLE_CHAT, TEXT
from app.core.conversation import single_conversation_id
from app.core.errors import ARGS_ERROR, TOKEN_INVALID, TOKEN_MALFORMED
from app.proto import sdkws_pb2 as pb
from app.services.auth import mint_token


def core_sdk_url(base: str, user: str, platform: int, sdk_type: str | None, gzip: bool, **extra: str) -> str:
    """The URL openim-sdk-core dials (internal/interaction/long_conn_mgr.go reConn): no sdkType."""
    query = {
        "sendID": user,
        "token": mint_token(user, platform),
        "platformID": str(platform),
        "operationID": uuid.uuid4().hex,
        "isBackground": "false",
        "sdkVersion": "v3.8.3",
        **({"sdkType": sdk_type} if sdk_type is not None else {}),
        **({"compression": "gzip"} if gzip else {}),
        **extra,
    }
    return f"{base.rstrip('/')}/?{urlencode(query)}"


class GobSocket:
    """A raw socket speaking gob as the core SDK does; every frame it receives is kept and checked."""

    def __init__(self, url: str, user: str, gzip: bool) -> None:
        self.ws = websocket.create_connection(url, timeout=15)
        self.user = user
        self.gzip = gzip
        self.texts: list[str] = []  # text frames, each checked by the test that expects one
        self.incr = 0

    def send_raw(self, frame: bytes) -> None:
        self.ws.send_binary(frame)

    def request(self, req_identifier: int, data: Message | None, operation_id: str = "") -> str:
        self.incr += 1
        incr = f"{self.user}-{self.incr}"
        body = data.SerializeToString() if data is not None else b""
        req = gob.GeneralWsReq(req_identifier, "", self.user, operation_id or uuid.uuid4().hex, incr, body)
        frame = gob.encode_request(req)
        self.send_raw(protocol.gzip_frame(frame) if self.gzip else frame)
        return incr

    def recv_frame(self, timeout: float = 15.0) -> tuple[int, bytes]:
        self.ws.settimeout(timeout)
        opcode, data = self.ws.recv_data()
        return opcode, data

    def recv(self, timeout: float = 15.0) -> gob.GeneralWsResp:
        """The next frame, which must be a binary gob GeneralWsResp."""
        opcode, data = self.recv_frame(timeout)
        if opcode == websocket.ABNF.OPCODE_TEXT:
            self.texts.append(data.decode())
        assert opcode == websocket.ABNF.OPCODE_BINARY, f"a text frame reached a gob client: {data!r}"
        return gob.decode_response(protocol.gunzip_frame(data, max_bytes=1 << 30) if self.gzip else data)

    def answer_to(self, incr: str, pushes: list[gob.GeneralWsResp] | None = None) -> gob.GeneralWsResp:
        """The answer carrying this msgIncr; pushes arriving meanwhile are kept in `pushes`."""
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            resp = self.recv(max(0.1, deadline - time.monotonic()))
            if resp.msg_incr == incr:
                return resp
            assert resp.req_identifier == protocol.PUSH_MSG, resp
            if pushes is not None:
                pushes.append(resp)
        raise AssertionError(f"no answer to {incr}")

    def close(self) -> None:
        self.ws.close()


def pushed_texts(resp: gob.GeneralWsResp, conv: str) -> list[tuple[int, str, str]]:
    push = pb.PushMessages.FromString(resp.data)
    return [(m.seq, m.sendID, json.loads(m.content)["content"]) for m in push.msgs[conv].Msgs]


def text_msg(send_id: str, recv_id: str, text: str) -> pb.MsgData:
    return pb.MsgData(
        sendID=send_id,
        recvID=recv_id,
        clientMsgID=uuid.uuid4().hex,
        sessionType=SINGLE_CHAT,
        contentType=TEXT,
        content=json.dumps({"content": text}).encode(),
        createTime=int(time.time() * 1000),
    )


@pytest.mark.parametrize(
    ("sdk_type", "gzip"),
    [(None, True), ("go", True), ("go", False)],
    ids=["no-sdkType-gzip", "go-gzip", "go-plain"],
)
def test_core_sdk_chats_in_gob_with_a_json_peer(stack: Any, uid: str, sdk_type: str | None, gzip: bool) -> None:
    alice, bob = f"ga{uid}", f"gb{uid}"
    conv = single_conversation_id(alice, bob)
    core = GobSocket(core_sdk_url(stack.ws_url, alice, LINUX, sdk_type, gzip), alice, gzip)
    peer = ImClient(stack.ws_url, bob, LINUX, mint_token(bob, LINUX), sdk_type=protocol.SDK_JSON)
    try:
        # 1001 GetNewestSeq
        incr = core.request(protocol.GET_NEWEST_SEQ, pb.GetMaxSeqReq(userID=alice), "op-seq")
        answer = core.answer_to(incr)
        assert (answer.req_identifier, answer.err_code, answer.err_msg, answer.operation_id) == (1001, 0, "", "op-seq")
        assert pb.GetMaxSeqResp.FromString(answer.data).maxSeqs.get(conv, 0) == 0

        # 1003 SendMsg to the JSON peer: a gob ack, the peer's push in JSON
        sent = text_msg(alice, bob, "hello from gob")
        pushes: list[gob.GeneralWsResp] = []
        answer = core.answer_to(core.request(protocol.SEND_MSG, sent, "op-send"), pushes)
        assert (answer.req_identifier, answer.err_code, answer.operation_id) == (1003, 0, "op-send")
        ack = pb.UserSendMsgResp.FromString(answer.data)
        assert ack.clientMsgID == sent.clientMsgID and ack.serverMsgID and ack.sendTime > 0
        got = peer.pushed_msgs(1, timeout=30)
        assert [(text_of(m), m["sendID"]) for m in got] == [("hello from gob", alice)]

        # the peer answers: a 2001 push in gob, data a protobuf PushMessages
        peer.send_text(alice, "hello from json")
        deadline = time.monotonic() + 30
        texts: list[tuple[int, str, str]] = []
        while ("hello from json" not in [t for _, _, t in texts]) and time.monotonic() < deadline:
            push = pushes.pop(0) if pushes else core.recv(max(0.1, deadline - time.monotonic()))
            assert (push.req_identifier, push.err_code, push.msg_incr) == (protocol.PUSH_MSG, 0, "")
            texts += pushed_texts(push, conv)
        assert (2, bob, "hello from json") in texts
        assert (1, alice, "hello from gob") in texts  # its own message comes back with its seq (the echo)

        # a frame that is not gzip, and one that is gzip but no gob: a gob 3001/1001 answer each
        for garbage in (b"\x00\x01garbage\xff", protocol.gzip_frame(b"\x07\xff\x81\x03garbage")):
            core.send_raw(garbage if gzip else garbage[2:])
            refused = core.recv()
            assert (refused.req_identifier, refused.err_code) == (protocol.DATA_ERROR, ARGS_ERROR), refused
            assert refused.data == b""
        # an unknown reqIdentifier is answered under it, with 1001
        incr = core.request(9999, None)
        refused = core.answer_to(incr)
        assert (refused.req_identifier, refused.err_code) == (9999, ARGS_ERROR)

        # the connection keeps working
        answer = core.answer_to(core.request(protocol.GET_NEWEST_SEQ, pb.GetMaxSeqReq(userID=alice)))
        assert (answer.err_code, pb.GetMaxSeqResp.FromString(answer.data).maxSeqs[conv]) == (0, 2)

        # a text ping gets the only text frame a gob client ever sees: the pong, its body echoed
        core.ws.send(json.dumps({"type": "ping", "body": "hb"}))
        opcode, data = core.recv_frame()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert json.loads(data) == {"type": "pong", "body": "hb"}

        # nothing else is pending, text or binary
        with pytest.raises(websocket.WebSocketTimeoutException):
            core.recv_frame(timeout=1.0)
        assert core.texts == []
    finally:
        core.close()
        peer.close()


def test_connection_answer_then_only_gob(stack: Any, uid: str) -> None:
    """isMsgResp=true (the core SDK's web build asks for it): OpenIM's connection answer is one text
    frame {errCode, errMsg, errDlt}; after it, gob frames only. A refusal is that text answer too."""
    user = f"gc{uid}"
    core = GobSocket(core_sdk_url(stack.ws_url, user, LINUX, None, True, isMsgResp="true"), user, True)
    try:
        opcode, data = core.recv_frame()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert json.loads(data) == {"errCode": 0, "errMsg": "", "errDlt": ""}
        answer = core.answer_to(core.request(protocol.GET_NEWEST_SEQ, pb.GetMaxSeqReq(userID=user)))
        assert (answer.req_identifier, answer.err_code) == (1001, 0)
    finally:
        core.close()

    url = core_sdk_url(stack.ws_url, user, LINUX, None, True, isMsgResp="true").replace("token=", "token=x")
    refused = websocket.create_connection(url, timeout=15)
    try:
        opcode, data = refused.recv_data()
        assert opcode == websocket.ABNF.OPCODE_TEXT
        assert json.loads(data)["errCode"] != 0
    finally:
        refused.close()


def test_our_client_speaks_gob_too(stack: Any, uid: str) -> None:
    """ImClient with sdk_type=go: the same requests and answers as the JSON encodings."""
    alice, bob = f"gd{uid}", f"ge{uid}"
    conv = single_conversation_id(alice, bob)
    as_gob = ImClient(stack.ws_url, alice, LINUX, mint_token(alice, LINUX), sdk_type=protocol.SDK_GO, gzip=True)
    peer = ImClient(stack.ws_url, bob, LINUX, mint_token(bob, LINUX), sdk_type=protocol.SDK_JS)
    try:
        ack = as_gob.send_text(bob, "one")
        assert ack["serverMsgID"]
        assert [text_of(m) for m in peer.pushed_msgs(1)] == ["one"]
        peer.send_text(alice, "two")
        got = as_gob.pushed_msgs(2)
        assert [text_of(m) for m in got if m["sendID"] == bob] == ["two"]
        assert as_gob.newest_seqs()[conv] == 2
        assert [text_of(m) for m in as_gob.pull_range(conv, 1, 2)["Msgs"]] == ["one", "two"]
        assert as_gob.request_raw(1002, {"seqRanges": [{"conversationID": "si_x_y", "begin": 1, "end": 1}]})["errCode"]
    finally:
        as_gob.close()
        peer.close()


def upgrade(url: str) -> requests.Response:
    """The opening handshake as a websocket client sends it, read as plain HTTP."""
    headers = {
        "Upgrade": "websocket",
        "Connection": "Upgrade",
        "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version": "13",
    }
    return requests.get(url.replace("ws://", "http://", 1), headers=headers, timeout=15, stream=True)


def test_native_core_sdk_hears_a_refusal_in_the_http_answer(stack: Any, uid: str) -> None:
    """Without isMsgResp (the native core SDK), OpenIM refuses in the HTTP answer to the upgrade:
    200, {errCode, errMsg, errDlt}; the SDK reads it when its dial fails (a text frame after an
    upgrade would stop its reader for good). JSON clients keep the text-frame refusal."""
    user = f"gf{uid}"
    for sdk_type in (None, "go"):
        url = core_sdk_url(stack.ws_url, user, LINUX, sdk_type, True).replace("token=", "token=x")
        answer = upgrade(url)
        assert answer.status_code == 200
        body = answer.json()
        assert body["errCode"] in (TOKEN_INVALID, TOKEN_MALFORMED) and set(body) == {"errCode", "errMsg", "errDlt"}
    assert upgrade(core_sdk_url(stack.ws_url, user, LINUX, None, True)).status_code == 101
    refused = upgrade(core_sdk_url(stack.ws_url, user, LINUX, "json", False).replace("token=", "token=x"))
    assert refused.status_code == 101


# --- fuzzing: whatever arrives on a gob socket gets one gob answer, and the socket lives on ----------

FUZZ_USER = "gobfuzzer"
REQ_CODES = [1001, 1002, 1003, 1005, 1006, 1007, 2003, 2004, 2005, 3001, 0, -1]

gob_requests = st.builds(
    gob.GeneralWsReq,
    req_identifier=st.sampled_from(REQ_CODES) | st.integers(-(2**63), 2**63 - 1),
    token=st.text(max_size=10),
    send_id=st.sampled_from([FUZZ_USER, "victim", ""]),
    operation_id=st.text(max_size=10),
    msg_incr=st.text(max_size=10),
    data=st.binary(max_size=60),
).map(gob.encode_request)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A real request frame, then cut, grown, or with bytes changed: what a broken client might send."""
    frame = bytearray(draw(gob_requests))
    for _ in range(draw(st.integers(0, 4))):
        action = draw(st.sampled_from(["flip", "cut", "insert"]))
        at = draw(st.integers(0, max(0, len(frame) - 1)))
        if action == "flip" and frame:
            frame[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del frame[at:]
        else:
            frame[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(frame)


gob_frames = st.one_of(
    mutated().map(lambda f: ("gzip", f)),
    st.binary(max_size=200).map(lambda f: ("gzip", f)),
    st.binary(max_size=200).map(lambda f: ("plain", f)),  # not gzip on a gzip socket
    st.text(max_size=60).map(lambda t: ("text", t)),  # a text frame that is no ping
)


class GobFuzzSocket:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.sock = self._open()

    def _open(self) -> GobSocket:  # a fresh token each time: a 2003 logout revokes the one it used
        return GobSocket(core_sdk_url(self.base_url, FUZZ_USER, LINUX, None, True), FUZZ_USER, True)

    def exchange(self, kind: str, payload: bytes | str) -> gob.GeneralWsResp:
        if isinstance(payload, str):
            self.sock.ws.send(payload)
        else:
            self.sock.send_raw(protocol.gzip_frame(payload) if kind == "gzip" else payload)
        answer = self.sock.recv()
        if answer.req_identifier == protocol.LOGOUT_MSG and answer.err_code == 0:
            self.sock.close()
            self.sock = self._open()
        return answer


@pytest.fixture(scope="module")
def gob_fuzz_node(stack: Any) -> Any:
    """Its own gateway node, without a rate limit, so every frame reaches the request handling (and
    the hostile operationIDs it logs stay out of the main gateway's log)."""
    node = stack.start_gateway("gateway-gobfuzz", {"GATEWAY_RATE_LIMIT": "0"})
    yield node
    stack.terminate("gateway-gobfuzz")


@pytest.fixture(scope="module")
def gob_fuzz_socket(gob_fuzz_node: Any) -> Any:
    fuzz = GobFuzzSocket(gob_fuzz_node.ws_url)
    yield fuzz
    fuzz.sock.close()


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=gob_frames)
def test_every_gob_frame_gets_one_gob_answer(gob_fuzz_socket: GobFuzzSocket, frame: tuple[str, Any]) -> None:
    kind, payload = frame
    if kind == "text" and payload.lstrip().startswith("{") and '"ping"' in payload:
        return  # a ping is answered with a pong (test_core_sdk_chats_in_gob_with_a_json_peer)
    answer = gob_fuzz_socket.exchange(kind, payload)  # recv() fails on anything but a binary gob frame
    try:
        sent = gob.decode_request(payload) if kind == "gzip" and isinstance(payload, bytes) else None
    except gob.GobError:
        sent = None
    if sent is None:
        assert (answer.req_identifier, answer.err_code) == (protocol.DATA_ERROR, ARGS_ERROR), answer
        return
    if sent.req_identifier not in protocol.GO_REQ_IDENTIFIERS:  # OpenIM's is an int32: refused as 3001
        assert (answer.req_identifier, answer.err_code, answer.msg_incr) == (3001, ARGS_ERROR, sent.msg_incr)
        return
    echoed = (sent.req_identifier, sent.msg_incr, sent.operation_id)
    assert (answer.req_identifier, answer.msg_incr, answer.operation_id) == echoed
    if answer.err_code == 0:
        assert sent.send_id == FUZZ_USER


def test_gob_socket_and_node_serve_after_the_fuzzing(gob_fuzz_node: Any, gob_fuzz_socket: Any, uid: str) -> None:
    assert gob_fuzz_socket.exchange("gzip", b"garbage").req_identifier == protocol.DATA_ERROR  # still open
    user = f"gh{uid}"
    core = GobSocket(core_sdk_url(gob_fuzz_node.ws_url, user, LINUX, None, True), user, True)
    try:
        answer = core.answer_to(core.request(protocol.GET_NEWEST_SEQ, pb.GetMaxSeqReq(userID=user)))
        assert answer.err_code == 0
    finally:
        core.close()


def test_bench_load_clients_speak_gob(stack: Any, tmp_path: Any) -> None:
    """`python -m app bench e2e --sdk-type go`: the load clients in the core SDK's encoding."""
    from tests.integration.test_bench_smoke import run_bench

    report_path = tmp_path / "bench.json"
    run_bench(
        stack,
        ["e2e", "--smoke", "--no-progress", "--sdk-type", "go", "--gateway", stack.ws_url, "--json", str(report_path)],
        timeout=240,
    )
    msgs = json.loads(report_path.read_text())["messages"]
    assert msgs["acknowledged"] > 0 and msgs["acknowledged"] == msgs["persisted"]
    assert (msgs["lost"], msgs["duplicated"]) == (0, 0)
    assert msgs["deliveries"] == msgs["expected_deliveries"] > 0

"""The gateway's pure rules: connection parameters and the checks on an outgoing message."""

import gevent
import pytest

from app.core import gob, protocol
from app.core.constants import MSG_FROM_SYSTEM, MSG_FROM_USER, MSG_STATUS_SENDING
from app.core.errors import ARGS_ERROR, CONN_ARGS_ERROR, NO_PERMISSION, ImError
from app.gateway import parse_conn_args, prepare_outgoing
from app.proto import sdkws_pb2 as pb
from app.ws.connections import OUTBOX_LIMIT, Conn, ConnArgs
from tests.factories import text_msgdata


def conn_for(user: str = "alice", platform: int = 5, sdk_type: str = "json", compression: str = "") -> Conn:
    args = ConnArgs(
        token="",
        send_id=user,
        platform_id=platform,
        operation_id="",
        sdk_type=sdk_type,
        compression=compression,
        is_background=False,
        is_msg_resp=False,
    )
    return Conn(ws=None, args=args)


def test_conn_args() -> None:
    args = parse_conn_args({"sendID": "alice", "platformID": "5", "token": "t", "isMsgResp": "true"})
    assert (args.send_id, args.platform_id, args.sdk_type, args.is_msg_resp) == ("alice", 5, "go", True)


@pytest.mark.parametrize(
    "query",
    [
        {"platformID": "5"},
        {"sendID": "a", "platformID": "x"},
        {"sendID": "a", "platformID": "5", "sdkType": "python"},
        {"sendID": "a", "platformID": "11"},
        {"sendID": "a", "platformID": "5", "compression": "br"},
        {"sendID": "b_c", "platformID": "5"},  # `_` would give si_a_b_c two readings
        {"sendID": "a:b", "platformID": "5"},
        {"sendID": "x" * 65, "platformID": "5"},
    ],
)
def test_bad_conn_args(query: dict[str, str]) -> None:
    with pytest.raises(ImError) as err:
        parse_conn_args(query)
    assert err.value.code == CONN_ARGS_ERROR


def outgoing(**fields: object) -> pb.MsgData:
    """As a client sends it: without a sendID (the connection's user is the sender)."""
    return text_msgdata(**{"sendID": "", **fields})


def test_prepare_fills_server_fields() -> None:
    conv, doc = prepare_outgoing(conn_for(), outgoing(), max_content=1000, now_ms=1234)
    assert conv == "si_alice_bob"
    assert (doc["sender_nickname"], doc["sender_face_url"]) == ("", "")
    assert doc["send_id"] == "alice"
    assert doc["sender_platform_id"] == 5
    assert doc["send_time"] == 1234 and doc["create_time"] == 1234
    assert doc["server_msg_id"] and doc["seq"] == 0
    assert doc["status"] == MSG_STATUS_SENDING and doc["msg_from"] == MSG_FROM_USER


def test_sender_profile_is_the_servers() -> None:
    forged = outgoing(senderNickname="The Admin", senderFaceURL="http://evil/face.png", msgFrom=100)
    _, doc = prepare_outgoing(conn_for(), forged, max_content=1000, now_ms=1, sender=("Alice", "http://face/a"))
    assert (doc["sender_nickname"], doc["sender_face_url"], doc["msg_from"]) == ("Alice", "http://face/a", 100)


def test_own_read_receipt_passes() -> None:
    receipt = outgoing(contentType=2200, content=b'{"conversationID": "si_alice_bob", "hasReadSeq": 4}')
    conv, doc = prepare_outgoing(conn_for(), receipt, max_content=1000, now_ms=1)
    assert (conv, doc["content_type"]) == ("si_alice_bob", 2200)


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"sendID": "mallory"}, NO_PERMISSION),
        ({"sessionType": 9}, ARGS_ERROR),
        ({"recvID": ""}, ARGS_ERROR),
        ({"clientMsgID": ""}, ARGS_ERROR),
        ({"clientMsgID": "x" * 65}, ARGS_ERROR),
        ({"contentType": 0}, ARGS_ERROR),
        ({"content": b"x" * 1001}, ARGS_ERROR),
        ({"recvID": "b_c"}, ARGS_ERROR),
        ({"options": {"a\x00b": True}}, ARGS_ERROR),
        ({"msgFrom": MSG_FROM_SYSTEM}, NO_PERMISSION),
        ({"contentType": 1508}, NO_PERMISSION),  # MemberKickedNotification
        ({"contentType": 2200, "content": b'{"hasReadSeq": 1, "markAsReadUserID": "bob"}'}, NO_PERMISSION),
        ({"contentType": 2200, "content": b'{"hasReadSeq": 1, "conversationID": "si_bob_carol"}'}, NO_PERMISSION),
    ],
)
def test_prepare_rejects(fields: dict[str, object], code: int) -> None:
    with pytest.raises(ImError) as err:
        prepare_outgoing(conn_for(), outgoing(**fields), max_content=1000, now_ms=1)
    assert err.value.code == code


class RecordingSocket:
    """simple_websocket's Server as Conn uses it; `sock` (its TCP socket) is what Conn.abort shuts."""

    def __init__(self, block: bool = False) -> None:
        self.sent: list[bytes | str] = []
        self.closed = False
        self.block = block
        self.sock = self

    def setsockopt(self, *args: object) -> None:
        pass

    def shutdown(self, how: int) -> None:
        self.closed = True

    def send(self, item: bytes | str) -> None:
        if self.block:
            gevent.sleep(3600)
        self.sent.append(item)

    def close(self) -> None:
        self.closed = True


def test_conn_writes_in_order_through_one_writer() -> None:
    ws = RecordingSocket()
    conn = conn_for()
    conn.ws = ws
    for i in range(50):
        conn.send_frame(f"frame {i}".encode())
    conn.pong("hb")
    conn.finish()
    assert ws.sent == [f"frame {i}".encode() for i in range(50)] + ['{"type": "pong", "body": "hb"}']


def test_slow_client_is_closed_instead_of_queueing_forever() -> None:
    ws = RecordingSocket(block=True)
    conn = conn_for()
    conn.ws = ws
    for _ in range(OUTBOX_LIMIT + 5):
        conn.send_frame(b"x")
    assert ws.closed


def test_slow_client_over_the_byte_budget_is_dropped_and_its_session_ended() -> None:
    ws = RecordingSocket(block=True)
    ended: list[Conn] = []
    conn = conn_for()
    conn.ws, conn.outbox_max_bytes, conn.on_abort = ws, 1000, ended.append
    conn.send_frame(b"x" * 5000)  # one frame always fits in an empty outbox
    assert not conn.aborted
    conn.send_frame(b"x" * 10)
    assert conn.aborted and ws.closed and ended == [conn]
    conn.send_frame(b"x")  # dropped quietly: the session ended once
    conn.close()
    assert ended == [conn]


def b64url_json(body: object) -> str:
    import base64
    import json

    return base64.urlsafe_b64encode(json.dumps(body).encode()).decode().rstrip("=")


def test_conn_args_in_openims_v_form() -> None:
    v = b64url_json(
        {
            "token": "t",
            "userID": "alice",
            "platformID": 5,
            "operationID": "op",
            "sdkType": "js",
            "sendResponse": True,
            "background": False,
        }
    )
    args = parse_conn_args({"v": v}, header_compression="gzip")
    assert (args.send_id, args.platform_id, args.sdk_type, args.is_msg_resp, args.compression) == (
        "alice",
        5,
        "js",
        True,
        "gzip",
    )


def test_no_sdk_type_or_go_means_gob_as_in_openim() -> None:
    assert parse_conn_args({"sendID": "a", "platformID": "1", "sdkType": "go"}).sdk_type == "go"
    assert parse_conn_args({"sendID": "a", "platformID": "1"}).sdk_type == "go"
    assert parse_conn_args({"sendID": "a", "platformID": "1", "sdkType": "js"}).sdk_type == "js"
    assert parse_conn_args({"sendID": "a", "platformID": "1", "sdkType": "json"}).sdk_type == "json"


@pytest.mark.parametrize(
    "v",
    [
        "***",
        b64url_json([1, 2]),
        b64url_json({"userID": "a", "platformID": "5"}),
        b64url_json({"platformID": 5}),
        b64url_json({"userID": 5, "platformID": 5}),
    ],
)
def test_bad_v_form(v: str) -> None:
    with pytest.raises(ImError) as err:
        parse_conn_args({"v": v})
    assert err.value.code == CONN_ARGS_ERROR


def test_gob_conn_writes_only_gob_frames_but_its_two_texts() -> None:
    """A gob connection: answers, kicks and an answer that cannot be encoded are binary gob frames
    (gzipped); the only text frames are the connection answer and the pong."""
    ws = RecordingSocket()
    conn = conn_for(sdk_type="go", compression="gzip")
    conn.ws = ws
    conn.answer_connection()
    conn.respond(1001, "1", "op", pb.GetMaxSeqResp(maxSeqs={"si_a_b": 2}))
    conn.respond(1003, "2", "op", err=ImError(ARGS_ERROR, "bad"))
    conn.respond(2**40, "3", "op", err=ImError(ARGS_ERROR, "unknown"))  # gob cannot carry it back: a 3001
    conn.pong("hb")
    conn.kick()
    conn.finish()
    texts = [f for f in ws.sent if isinstance(f, str)]
    assert texts == ['{"errCode": 0, "errMsg": "", "errDlt": ""}', '{"type": "pong", "body": "hb"}']
    answers = [gob.decode_response(protocol.gunzip_frame(f)) for f in ws.sent if isinstance(f, bytes)]
    assert [(a.req_identifier, a.msg_incr, a.err_code) for a in answers] == [
        (1001, "1", 0),
        (1003, "2", ARGS_ERROR),
        (3001, "", ARGS_ERROR),
        (2002, "", 0),
    ]
    assert pb.GetMaxSeqResp.FromString(answers[0].data).maxSeqs == {"si_a_b": 2}

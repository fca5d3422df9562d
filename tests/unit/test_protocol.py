import base64
import gzip
import json

import pytest

from app.core import protocol
from app.core.constants import MSG_STATUS_DELETED
from app.core.errors import ARGS_ERROR, ImError
from app.proto import sdkws_pb2 as pb


def sample_msg() -> pb.MsgData:
    msg = pb.MsgData(
        sendID="alice",
        recvID="bob",
        clientMsgID="c1",
        serverMsgID="s1",
        senderPlatformID=7,
        sessionType=1,
        msgFrom=100,
        contentType=101,
        content='{"content":"héllo"}'.encode(),
        seq=42,
        sendTime=1700000000123,
        createTime=1700000000000,
        status=2,
        options={"history": True, "offlinePush": False},
        atUserIDList=["carol"],
        ex="x",
    )
    msg.offlinePushInfo.title = "T"
    msg.offlinePushInfo.desc = "D"
    return msg


def test_parse_request_fields() -> None:
    frame = json.dumps(
        {"reqIdentifier": 1003, "sendID": "alice", "operationID": "op", "msgIncr": 5, "token": "t", "data": {"a": 1}}
    )
    req = protocol.parse_request(frame.encode())
    assert req.req_identifier == 1003
    assert req.msg_incr == "5"
    assert req.data == {"a": 1}


@pytest.mark.parametrize(
    "frame",
    [
        b"not json",
        b"[1,2]",
        b'{"reqIdentifier":"1003"}',
        b'{"reqIdentifier":true}',
        b'{"reqIdentifier":1,"sendID":[]}',
        b"\xff\xfe",
    ],
)
def test_parse_request_rejects(frame: bytes) -> None:
    with pytest.raises(ImError) as err:
        protocol.parse_request(frame)
    assert err.value.code == ARGS_ERROR


def test_best_effort_envelope() -> None:
    assert protocol.best_effort_envelope(b'{"reqIdentifier": 1003, "msgIncr": "9", "sendID": 5}') == {
        "reqIdentifier": 1003,
        "msgIncr": "9",
    }
    assert protocol.best_effort_envelope(b"garbage") == {}


def test_json_and_js_codecs_carry_the_same_message() -> None:
    msg = sample_msg()
    as_json = protocol.encode_data(protocol.SDK_JSON, msg)
    as_js = protocol.encode_data(protocol.SDK_JS, msg)
    assert as_json["sendID"] == "alice"
    assert base64.b64decode(as_json["content"]) == msg.content
    assert protocol.decode_data(protocol.SDK_JSON, as_json, pb.MsgData) == msg
    assert protocol.decode_data(protocol.SDK_JS, as_js, pb.MsgData) == msg
    # int64 may arrive as a JSON number as well as the canonical string
    as_json["seq"] = 42
    assert protocol.decode_data(protocol.SDK_JSON, as_json, pb.MsgData).seq == 42


@pytest.mark.parametrize(
    ("sdk", "data"),
    [
        ("json", "a string"),
        ("json", {"seq": "not a number"}),
        ("json", {"content": "***not base64***"}),
        ("js", {"an": "object"}),
        ("js", "***"),
        ("js", base64.b64encode(b"\xff\xff\xff").decode()),
    ],
)
def test_decode_data_rejects(sdk: str, data: object) -> None:
    with pytest.raises(ImError) as err:
        protocol.decode_data(sdk, data, pb.MsgData)
    assert err.value.code == ARGS_ERROR


def test_stored_shape_round_trip() -> None:
    msg = sample_msg()
    doc = protocol.msgdata_to_doc(msg)
    assert doc["send_id"] == "alice"
    assert doc["client_msg_id"] == "c1"
    assert doc["content"] == '{"content":"héllo"}'
    assert doc["offline_push"]["title"] == "T"
    assert protocol.doc_to_msgdata(doc) == msg
    json.dumps(doc)  # the broker and the cache carry it as JSON


def test_non_utf8_content_is_refused() -> None:
    with pytest.raises(ImError):
        protocol.msgdata_to_doc(pb.MsgData(content=b"\xff\xfe"))


def test_response_envelope_and_gzip() -> None:
    frame = protocol.encode_response(1001, "7", "op", {"x": 1}, err_code=0)
    body = json.loads(frame)
    assert body == {
        "reqIdentifier": 1001,
        "msgIncr": "7",
        "operationID": "op",
        "errCode": 0,
        "errMsg": "",
        "data": {"x": 1},
    }
    assert protocol.gunzip_frame(protocol.gzip_frame(frame)) == frame
    with pytest.raises(ImError):
        protocol.gunzip_frame(b"plain")


def test_gunzip_is_bounded() -> None:
    limit = protocol.MAX_INFLATED_FRAME_BYTES
    assert protocol.gunzip_frame(gzip.compress(b"x" * limit)) == b"x" * limit
    # two members, as gzip.decompress reads them
    assert protocol.gunzip_frame(gzip.compress(b"ab") + gzip.compress(b"cd")) == b"abcd"
    bomb = gzip.compress(b"\0" * 50_000_000, compresslevel=9)
    assert len(bomb) <= protocol.MAX_FRAME_BYTES
    for frame in (bomb, gzip.compress(b"x" * (limit + 1)), gzip.compress(b"x" * limit) + gzip.compress(b"y")):
        with pytest.raises(ImError) as err:
            protocol.gunzip_frame(frame)
        assert err.value.code == ARGS_ERROR and "too large after decompression" in err.value.message
    with pytest.raises(ImError, match="truncated"):
        protocol.gunzip_frame(gzip.compress(b"x" * 1000)[:-12])


def test_placeholder_is_deleted_status() -> None:
    msg = protocol.placeholder_msg("si_a_b", 9)
    assert (msg.seq, msg.status) == (9, MSG_STATUS_DELETED)

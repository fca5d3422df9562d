import base64
import gzip
import json

import pytest
from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st

from app.core import gob, protocol
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
    req = protocol.parse_request(frame.encode(), protocol.SDK_JSON)
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
    for sdk_type in protocol.SDK_TYPES:  # JSON's refusals, and gob's: none of these is a gob frame either
        with pytest.raises(ImError) as err:
            protocol.parse_request(frame, sdk_type)
        assert err.value.code == ARGS_ERROR


def test_best_effort_envelope() -> None:
    frame = b'{"reqIdentifier": 1003, "msgIncr": "9", "sendID": 5}'
    assert protocol.best_effort_envelope(frame, protocol.SDK_JSON) == {"reqIdentifier": 1003, "msgIncr": "9"}
    assert protocol.best_effort_envelope(b"garbage", protocol.SDK_JS) == {}
    assert protocol.best_effort_envelope(frame, protocol.SDK_GO) == {}
    assert protocol.best_effort_envelope(b"\x03\xff\x81", protocol.SDK_GO) == {}


def test_gob_envelope_round_trip() -> None:
    """sdkType=go: a gob GeneralWsReq in, `data` the raw protobuf; a gob GeneralWsResp out."""
    msg = sample_msg()
    frame = gob.encode_request(gob.GeneralWsReq(1003, "t", "alice", "op", "7", msg.SerializeToString()))
    req = protocol.parse_request(frame, protocol.SDK_GO)
    assert (req.req_identifier, req.token, req.send_id) == (1003, "t", "alice")
    assert (req.operation_id, req.msg_incr) == ("op", "7")
    assert protocol.decode_data(protocol.SDK_GO, req.data, pb.MsgData) == msg
    assert protocol.best_effort_envelope(frame, protocol.SDK_GO) == {
        "reqIdentifier": 1003,
        "msgIncr": "7",
        "operationID": "op",
    }
    answer = pb.UserSendMsgResp(serverMsgID="s", clientMsgID="c", sendTime=5)
    resp = gob.decode_response(protocol.encode_response(1003, "7", "op", answer, sdk_type=protocol.SDK_GO))
    assert resp == gob.GeneralWsResp(1003, 0, "", "7", "op", answer.SerializeToString())
    refused = protocol.encode_response(3001, "", "", sdk_type=protocol.SDK_GO, err_code=1001, err_msg="bad")
    assert gob.decode_response(refused) == gob.GeneralWsResp(3001, 1001, "bad", "", "", b"")


def test_gob_req_identifier_is_an_int32_as_in_openim() -> None:
    frame = gob.encode_request(gob.GeneralWsReq(2**31, "", "alice", "op", "7", b""))
    with pytest.raises(ImError) as err:
        protocol.parse_request(frame, protocol.SDK_GO)
    assert err.value.code == ARGS_ERROR
    assert protocol.best_effort_envelope(frame, protocol.SDK_GO) == {"msgIncr": "7", "operationID": "op"}


def test_no_sdk_type_is_gob() -> None:
    assert protocol.SDK_ALIASES[""] == protocol.SDK_GO
    assert protocol.SDK_ALIASES["go"] == protocol.SDK_GO


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
        ("go", "a string"),
        ("go", b"\xff\xff\xff"),
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
    answer = pb.GetMaxSeqResp(maxSeqs={"si_a_b": 3})
    frame = protocol.encode_response(1001, "7", "op", answer, sdk_type=protocol.SDK_JSON)
    body = json.loads(frame)
    assert body == {
        "reqIdentifier": 1001,
        "msgIncr": "7",
        "operationID": "op",
        "errCode": 0,
        "errMsg": "",
        "data": protocol.encode_data(protocol.SDK_JSON, answer),
    }
    as_js = json.loads(protocol.encode_response(1001, "7", "op", answer, sdk_type=protocol.SDK_JS))
    assert base64.b64decode(as_js["data"]) == answer.SerializeToString()
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


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40), st.text(max_size=40), st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_send_msg_answers_are_what_json_format_would_write(server_id: str, client_id: str, send_time: int) -> None:
    resp = pb.UserSendMsgResp(serverMsgID=server_id, clientMsgID=client_id, sendTime=send_time)
    slow = json_format.MessageToDict(resp, always_print_fields_with_no_presence=True)
    assert protocol.encode_data("json", resp) == slow
    assert json.dumps(protocol.encode_data("json", resp)) == json.dumps(slow)  # key order too

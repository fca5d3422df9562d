"""Push frames built without json_format are what json_format would write, and refused where it refuses.

The gateway encodes each 2001 push once per (encoding, gzip) for every recipient socket, and builds
the sdkType=json data directly from the stored messages (protocol.doc_to_msgdata_json,
push_frames.run_json). These properties compare it with the old path, protobuf and json_format, on
stored messages as transfer writes them and on hostile ones.
"""

from __future__ import annotations

import base64
import gzip
import json
from typing import Any

from google.protobuf import json_format
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.core import protocol, push_frames
from app.core.push_frames import OPERATION_ID
from app.proto import sdkws_pb2 as pb

INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=12)
IDS = st.sampled_from(["a", "b", "g1", "ü", ""])


def slow_json(doc: dict[str, Any]) -> dict[str, Any]:
    return json_format.MessageToDict(protocol.doc_to_msgdata(doc), always_print_fields_with_no_presence=True)


def few_keys(value: Any) -> bool:
    """JSON maps of more than one key come out of protobuf in its own (hash) order: compared as dicts."""
    if isinstance(value, dict):
        return len(value.get("options", {})) <= 1 and all(few_keys(v) for v in value.values())
    if isinstance(value, list):
        return all(few_keys(v) for v in value)
    return True


offline_pushes = st.none() | st.fixed_dictionaries(
    {},
    optional={
        "title": TEXT,
        "desc": TEXT,
        "ex": TEXT,
        "ios_push_sound": TEXT,
        "ios_badge_count": st.booleans(),
    },
)

# What transfer stores (msgdata_to_doc's shape), some fields missing or None as older writers left them.
stored_docs = st.fixed_dictionaries(
    {
        "send_id": IDS,
        "recv_id": IDS,
        "session_type": st.sampled_from([1, 3, 4]),
        "msg_from": st.sampled_from([100, 200]),
        "content_type": st.sampled_from([101, 111, 113, 1501, 2101, 2200]) | INT32,
        "content": TEXT,
        "seq": st.integers(min_value=0, max_value=2**40) | INT64,
    },
    optional={
        "group_id": IDS,
        "client_msg_id": TEXT,
        "server_msg_id": TEXT | st.none(),
        "sender_platform_id": INT32,
        "sender_nickname": TEXT | st.none(),
        "sender_face_url": TEXT,
        "send_time": INT64,
        "create_time": INT64,
        "status": INT32,
        "is_read": st.booleans(),
        "options": st.dictionaries(TEXT, st.booleans(), max_size=3),
        "offline_push": offline_pushes,
        "at_user_id_list": st.lists(TEXT, max_size=3),
        "attached_info": TEXT,
        "ex": TEXT,
        OPERATION_ID: st.sampled_from(["", "op1", "op2"]) | st.none(),
    },
)

# Anything a hostile or broken publisher could leave in a stored message's fields.
ANYTHING = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.sampled_from([2**31 - 1, 2**31, -(2**31) - 1, 2**63 - 1, 2**63, -(2**63) - 1])  # protobuf's bounds
    | st.floats(allow_nan=True)
    | st.text(max_size=4)
    | st.sampled_from(["\ud800", "a\udfffb", "12", "x"])
    | st.binary(max_size=4)
    | st.lists(st.text(max_size=2) | st.integers() | st.none() | st.binary(max_size=2), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.booleans() | st.integers() | st.text(max_size=1), max_size=2)
)
hostile_docs = st.dictionaries(
    st.sampled_from(
        [
            "send_id",
            "recv_id",
            "group_id",
            "client_msg_id",
            "server_msg_id",
            "sender_platform_id",
            "sender_nickname",
            "session_type",
            "msg_from",
            "content_type",
            "content",
            "seq",
            "send_time",
            "status",
            "is_read",
            "options",
            "offline_push",
            "at_user_id_list",
            "attached_info",
            "ex",
        ]
    ),
    ANYTHING,
    max_size=6,
)


@settings(max_examples=400, deadline=None)
@given(stored_docs)
def test_a_stored_message_is_what_json_format_writes(doc: dict[str, Any]) -> None:
    fast, slow = protocol.doc_to_msgdata_json(doc), slow_json(doc)
    assert fast == slow
    if few_keys(slow):
        assert json.dumps(fast) == json.dumps(slow)  # key order too


@settings(max_examples=600, deadline=None)
@given(hostile_docs)
@example({"seq": 2**63})  # protobuf's bounds, always tried
@example({"send_time": -(2**63) - 1})
@example({"session_type": 2**31})
@example({"send_id": "\ud800"})
@example({"options": {"a": "x"}})
@example({"at_user_id_list": [None]})
def test_a_hostile_message_is_refused_where_protobuf_refuses_it(doc: dict[str, Any]) -> None:
    try:
        slow = slow_json(doc)
    except Exception:
        slow = None
    try:
        fast = protocol.doc_to_msgdata_json(doc)
    except Exception:
        fast = None
    assert fast == slow
    if slow is not None and few_keys(slow):
        assert json.dumps(fast) == json.dumps(slow)


def old_frames(conversation_id: str, msgs: list[dict[str, Any]], sdk_type: str) -> list[bytes]:
    """How the gateway encoded a delivery before: protobuf per run, json_format for sdkType=json."""
    return [
        protocol.encode_response(protocol.PUSH_MSG, "", op, push, sdk_type=sdk_type)
        for op, push in push_frames.push_payloads(conversation_id, msgs)
    ]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["si_a_b", "sg_g1"]), st.lists(stored_docs, min_size=1, max_size=6))
def test_a_deliverys_frames_are_the_old_frames_in_every_encoding(
    conversation_id: str, msgs: list[dict[str, Any]]
) -> None:
    frames = push_frames.PushFrames(push_frames.push_runs(conversation_id, msgs))
    for sdk_type in protocol.SDK_TYPES:
        old = old_frames(conversation_id, msgs, sdk_type)
        new = frames.frames(sdk_type, False)
        if sdk_type == protocol.SDK_JSON:
            assert [json.loads(f) for f in new] == [json.loads(f) for f in old]
            if all(few_keys(json.loads(f)) for f in old):
                assert new == old
        else:
            assert new == old  # the same protobuf, the same envelope, byte for byte
        zipped = frames.frames(sdk_type, True)
        assert [gzip.decompress(f) for f in zipped] == new
        assert frames.frames(sdk_type, True) is zipped  # encoded once, reused for every socket


def test_a_run_that_cannot_be_encoded_yields_no_frame_at_all() -> None:
    good = {"send_id": "a", "recv_id": "b", "session_type": 1, "content": "x", "seq": 1, OPERATION_ID: "op1"}
    bad = {**good, "seq": 2**64, OPERATION_ID: "op2"}  # out of int64: protobuf refuses it
    frames = push_frames.PushFrames(push_frames.push_runs("si_a_b", [good, bad]))
    for sdk_type in protocol.SDK_TYPES:
        try:
            frames.frames(sdk_type, False)
        except ValueError:
            continue
        raise AssertionError(f"{sdk_type}: a frame for a message protobuf refuses")


# --- SendMsg data of sdkType=json clients, read without ParseDict where it is plain ---------------

JSON_VALUES = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**65), max_value=2**65)
    | st.sampled_from([2**31, -(2**31) - 1, 2**63, -(2**63) - 1, 1.0, 1.5, float("inf")])
    | st.floats(allow_nan=False)
    | st.text(max_size=6)
    | st.sampled_from(["12", "0012", "-3", "1_0", " 7", "9" * 20, "\ud800", "aGk=", "aGk", "a-_b", "?!", "Zg==Zg=="])
    | st.lists(st.text(max_size=3) | st.integers() | st.none(), max_size=3)
    | st.dictionaries(st.text(max_size=3), st.booleans() | st.integers() | st.none(), max_size=3)
)
MSGDATA_NAMES = st.sampled_from(
    [f.json_name for f in pb.MsgData.DESCRIPTOR.fields] + ["unknownField", "[ext.x]", "content"]
)
plain_sends = st.fixed_dictionaries(
    {
        "sendID": IDS,
        "recvID": IDS,
        "clientMsgID": TEXT,
        "sessionType": st.sampled_from([1, 3]),
        "contentType": st.sampled_from([101, 113]),
        "content": st.binary(max_size=20).map(lambda b: base64.b64encode(b).decode()),
    },
    optional={
        "senderPlatformID": INT32,
        "msgFrom": st.sampled_from([100, 200]),
        "createTime": INT64 | INT64.map(str),
        "sendTime": INT64,
        "options": st.dictionaries(TEXT, st.booleans(), max_size=3),
        "atUserIDList": st.lists(TEXT, max_size=2),
        "isRead": st.booleans(),
        "ex": TEXT,
    },
)


def parse_dict(data: Any) -> Any:
    message = pb.MsgData()
    try:
        json_format.ParseDict(data, message, ignore_unknown_fields=True)
    except Exception as exc:
        return type(exc), str(exc)
    return message


@settings(max_examples=400, deadline=None)
@given(plain_sends)
def test_a_plain_send_is_read_as_parse_dict_reads_it(data: dict[str, Any]) -> None:
    fast = protocol.msgdata_from_plain_json(data)
    assert fast is not None  # the shape clients send is read without ParseDict
    assert fast == parse_dict(data)
    assert protocol.decode_data("json", data, pb.MsgData) == fast


@settings(max_examples=1500, deadline=None)
@given(st.dictionaries(MSGDATA_NAMES, JSON_VALUES, max_size=5))
@example({"seq": 2**63})
@example({"sessionType": 2**31})
@example({"sendID": "\ud800"})
@example({"content": "aGk"})
@example({"content": "a-_b"})
@example({"content": "?!"})
@example({"seq": "1_0"})
@example({"[ext.x]": 1})
def test_any_send_is_read_or_refused_as_parse_dict_does(data: dict[str, Any]) -> None:
    slow = parse_dict(data)
    fast = protocol.msgdata_from_plain_json(data)
    if fast is not None:
        assert fast == slow
    try:
        got: Any = protocol.decode_data("json", data, pb.MsgData)
    except Exception as exc:
        assert not isinstance(slow, pb.MsgData), f"refused what ParseDict reads: {exc}"
        assert str(slow[1]) in str(exc)  # ParseDict's words reach the client
        return
    assert got == slow


# what an envelope's data can hold: JSON values (no NaN: nothing the gateway sends comes from one)
json_data = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(), st.text(max_size=5), st.text(max_size=5), json_data)
def test_an_envelope_reads_as_what_json_dumps_writes(req_id: int, msg_incr: str, operation_id: str, data: Any) -> None:
    """Compact UTF-8 JSON (orjson; non-ASCII text is not escaped) with the standard library's meaning."""
    body = {
        "reqIdentifier": req_id,
        "msgIncr": msg_incr,
        "operationID": operation_id,
        "errCode": 0,
        "errMsg": "",
        "data": data,
    }
    out = protocol.encode_json_envelope(req_id, msg_incr, operation_id, data)
    assert json.loads(out) == json.loads(json.dumps(body))
    assert list(json.loads(out)) == list(body)  # the envelope's key order, as OpenIM writes it

"""Pure parts of app/pipeline/dead_letters.py: what an entry keeps, how ids read, what cannot be redriven."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.pipeline.dead_letters import decode_entry, encode_fields, parse_id, task_payload, transfer_payload


def test_an_entry_keeps_its_stage_reason_error_conversation_and_payload() -> None:
    msg = {"client_msg_id": "c1", "options": {"a\u0000b": True}, "content": "\ud800"}
    fields = encode_fields(
        "transfer",
        "key 'a\\x00b' contains a NUL character",
        transfer_payload([msg]),
        conversation="si_a_b",
        error=ValueError("bad"),
        details={"clientMsgID": "c1"},
        now_ms=1234,
    )
    assert all(isinstance(v, str) for v in fields.values())
    entry = decode_entry("1234-0", fields)
    assert entry.id == "transfer:1234-0" and entry.stage == "transfer" and entry.time == 1234
    assert entry.reason == "key 'a\\x00b' contains a NUL character"
    assert entry.error == "ValueError('bad')" and entry.conversation == "si_a_b"
    assert entry.payload == {"msgs": [msg]} and entry.redrivable
    assert entry.details == {"clientMsgID": "c1"}
    fields["payload"].encode("utf-8")  # a lone surrogate is kept escaped, so Redis can store it


def test_a_payload_without_json_is_kept_as_text_and_not_redrivable() -> None:
    deep: Any = 1
    for _ in range(100_000):
        deep = [deep]
    for payload in (deep, {"x": object()}):
        entry = decode_entry("1-0", encode_fields("push", "why", payload))
        assert not entry.redrivable and "unencodable" in entry.payload


def test_a_payload_over_the_bound_is_truncated_and_not_redrivable() -> None:
    fields = encode_fields("persist", "why", task_payload("persist", [["x" * 5000]]), max_payload_bytes=100)
    assert len(fields["payload"]) < 200
    entry = decode_entry("1-0", fields)
    assert not entry.redrivable and set(entry.payload) == {"truncated"}


def test_reasons_and_errors_are_bounded() -> None:
    fields = encode_fields("offline", "r" * 10_000, None, error="e" * 10_000)
    assert len(fields["reason"]) <= 500 and len(fields["error"]) <= 2000


def test_ids_name_their_stage() -> None:
    assert parse_id("persist:1764500000000-0") == ("persist", "1764500000000-0")
    assert parse_id(" 1764500000000-3 ") == (None, "1764500000000-3")
    with pytest.raises(ValueError, match="unknown dead-letter stage"):
        parse_id("nope:1-0")
    with pytest.raises(ValueError, match="unknown dead-letter stage"):
        encode_fields("nope", "why", None)


def test_the_entry_as_json_is_whole() -> None:
    entry = decode_entry("5-1", encode_fields("journal", "why", task_payload("push", [{"c": []}]), now_ms=5))
    shown = json.loads(json.dumps(entry.as_dict()))
    assert shown["payload"] == {"queue": "push", "args": [{"c": []}]} and shown["id"] == "journal:5-1"

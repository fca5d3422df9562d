"""compact_json: orjson where it can, the standard library for what orjson refuses, one meaning for json.loads."""

from __future__ import annotations

import datetime
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from kombu.serialization import dumps as kombu_dumps
from kombu.serialization import loads as kombu_loads
from kombu.utils import json as kombu_json

from app.celery_app import celery_app  # noqa: F401  (registers the task serializer)
from app.core import compact_json

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_reads_back_as_the_standard_library_wrote_it(value: Any) -> None:
    # integers beyond 64 bits and lone surrogates (which orjson refuses) included
    assert json.loads(compact_json.dumps(value)) == json.loads(json.dumps(value))


@pytest.mark.parametrize(
    "value",
    [{"seq": 2**70}, {"content": "\ud800 lone"}, {1: "int key"}, [-(2**63) - 1]],
    ids=["big int", "lone surrogate", "int key", "below int64"],
)
def test_what_orjson_refuses_is_written_by_the_standard_library(value: Any) -> None:
    out = compact_json.dumps(value)
    assert out == json.dumps(value, separators=(",", ":")).encode()
    out.decode("ascii")  # escaped: storable anywhere (Redis, a broker message)


def test_common_values_are_compact_utf8() -> None:
    assert compact_json.dumps({"a": [1, 2.5, None, True], "b": "é"}) == '{"a":[1,2.5,null,true],"b":"é"}'.encode()


def test_task_messages_stay_kombus_json() -> None:
    when = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    for value in ([[{"seq": 1, "content": "é"}], {"journal": None}, {}], [{"at": when}], [2**70]):
        content_type, encoding, body = kombu_dumps(value, serializer="json")
        assert content_type == "application/json" and encoding == "utf-8"
        # what kombu's own writer would have produced, read back the same
        assert kombu_loads(body, content_type, encoding) == kombu_json.loads(kombu_json.dumps(value))


@given(json_values)
def test_reads_what_it_wrote_as_the_standard_library(value: Any) -> None:
    written = compact_json.dumps(value)
    assert compact_json.loads(written) == json.loads(written)
    assert compact_json.loads(written.decode("utf-8")) == json.loads(written)


@pytest.mark.parametrize(
    "text",
    [
        '{"seq": 18446744073709551616}',  # beyond 64 bits: orjson would read a float
        "[-9999999999999999999]",
        "12345678901234567890",
        '{"a": [1,\t 98765432109876543210]}',
        '{"a":\n-98765432109876543210.5e1}',
        '{"id": "phone 1234567890123456789012"}',  # a long digit run inside a string, after a space
        '{"a": 1e1234567890123456789}',
        '["\\ud800 lone"]',
        "[NaN, Infinity]",
        '{"a": 1e400}',
    ],
)
def test_reads_what_orjson_would_misread_or_refuse_through_the_fallback(text: str) -> None:
    value = compact_json.loads(text)
    expected = json.loads(text)
    assert repr(value) == repr(expected)  # repr: NaN != NaN, and 2**64 must stay an int
    assert repr(compact_json.loads(text.encode())) == repr(expected)


@given(
    st.lists(st.integers(min_value=-(2**80), max_value=2**80), min_size=1, max_size=4),
    st.sampled_from(["", " ", "\n", "\t", "\r\n  "]),
)
def test_long_integers_read_exactly_however_spaced(values: list[int], space: str) -> None:
    text = "[" + f",{space}".join(f"{space}{v}" for v in values) + "]"
    assert repr(compact_json.loads(text)) == repr(json.loads(text)) == repr(values)
    record = {"n": values[0]}
    assert repr(compact_json.loads(json.dumps(record, indent=space.count(" ") or None))) == repr(record)


def _refuse(text: Any) -> Any:
    raise AssertionError(f"read by the fallback: {text!r}")


@pytest.mark.parametrize(
    "text",
    [
        '{"server_msg_id": "1197e2a6012345678901234567890454"}',  # after a hex letter
        '{"id": "1234567890123456789012", "n": 7}',  # right after a quote
        '{"x": 1.12345678901234567890123, "y": 2e00000000000000000001}',  # a float's fraction, an exponent
    ],
)
def test_long_digit_runs_that_are_no_integer_are_read_by_orjson(text: str) -> None:
    assert compact_json.loads(text, fallback=_refuse) == json.loads(text)


def test_task_messages_with_kombus_typed_values_read_back() -> None:
    when = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    content_type, encoding, body = kombu_dumps([{"at": when, "n": 2**70}], serializer="json")
    assert kombu_loads(body, content_type, encoding) == [{"at": when, "n": 2**70}]
    assert compact_json.loads(memoryview(b'{"seq": 7}')) == {"seq": 7}


def test_text_holding_a_lone_surrogate_itself_reads_as_the_standard_library_reads_it() -> None:
    text = '["\ud800 raw", 1]'  # the character itself, not its escape: valid for json.loads, not UTF-8
    assert compact_json.loads(text) == json.loads(text)

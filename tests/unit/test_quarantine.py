"""Pure per-message checks of app/core/quarantine.py: what transfer refuses before a batch's commit."""

from __future__ import annotations

import json
from typing import Any

import bson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import protocol
from app.core.quarantine import MAX_STORED_MSG_BYTES, check_message, check_stored_message, problem_with
from tests.factories import text_msgdata


def gateway_doc(**fields: Any) -> dict[str, Any]:
    """A message as the gateway publishes it (protocol.msgdata_to_doc)."""
    msg = text_msgdata(serverMsgID="s1", msgFrom=100, sendTime=1, createTime=1, status=1, options={"history": True})
    return protocol.msgdata_to_doc(msg) | fields


def receipt(content: str) -> dict[str, Any]:
    return gateway_doc(content_type=2200, content=content)


def test_what_the_gateway_publishes_passes() -> None:
    assert problem_with(gateway_doc()) is None
    assert problem_with(gateway_doc(seq=12, status=2)) is None
    assert problem_with(gateway_doc(session_type=3, recv_id="", group_id="g1", leaving_user_ids=["u"])) is None
    assert problem_with(receipt('{"hasReadSeq": 3, "seqs": [1, 2, 3]}')) is None


@pytest.mark.parametrize(
    ("doc", "words"),
    [
        (gateway_doc(options={"a\u0000b": True}), "NUL"),
        (gateway_doc(options={"$set": True}), "starts with $"),
        (gateway_doc(options={"a.b": True}), "contains a dot"),
        (gateway_doc(options={"a": "yes"}), "options"),
        (gateway_doc(send_time=2**70), "MongoDB cannot store it"),
        (gateway_doc(content="x" * (MAX_STORED_MSG_BYTES + 1)), "bytes as BSON"),
        (gateway_doc(content="\ud800"), "MongoDB cannot store it"),
        (gateway_doc(extra={"a": {"b": {"c": {"d": {"e": 1}}}}}), "nests deeper"),
        (gateway_doc(content_type="101"), "content_type"),
        (gateway_doc(client_msg_id=""), "must not be empty"),
        (gateway_doc(session_type=9), "session_type 9"),
        (gateway_doc(session_type=3, group_id=""), "group_id"),
        (gateway_doc(recv_id=""), "recv_id"),
        (gateway_doc(offline_push="x"), "offline_push"),
        (gateway_doc(at_user_id_list=[1]), "at_user_id_list"),
        (receipt("[" * 955 + "]" * 955), "nests deeper"),
        (receipt('{"hasReadSeq": -1}'), "bad read receipt"),
        ({k: v for k, v in gateway_doc().items() if k != "send_id"}, "send_id"),
        ("not a message", "must be an object"),
        (None, "must be an object"),
    ],
)
def test_each_problem_is_refused_with_its_reason(doc: Any, words: str) -> None:
    reason = problem_with(doc)
    assert reason is not None and words in reason, reason


def test_deep_nesting_anywhere_is_refused_without_recursing() -> None:
    deep: Any = True
    for _ in range(50_000):  # far past the interpreter's recursion limit
        deep = [deep]
    reason = problem_with(gateway_doc(extra=deep))
    assert reason is not None and "nests deeper" in reason


@given(
    st.dictionaries(
        st.text(max_size=6),
        st.one_of(st.booleans(), st.integers(), st.text(max_size=8), st.none()),
        max_size=4,
    )
)
def test_the_storage_check_agrees_with_mongodbs_encoder(extra: dict[str, Any]) -> None:
    """Whatever bson.encode (MongoDB's driver) refuses in a message is refused before the commit."""
    doc = gateway_doc(extra=extra)
    try:
        bson.encode({"msg": doc})
        json.dumps(doc).encode()
        encodable = True
    except Exception:
        encodable = False
    try:
        check_stored_message(doc)
        passed = True
    except ValueError:
        passed = False
    if not encodable:
        assert not passed
    if passed:
        assert all("\x00" not in k and not k.startswith("$") and "." not in k for k in extra)


def test_check_message_raises_value_error() -> None:
    with pytest.raises(ValueError, match="NUL"):
        check_message(gateway_doc(options={"\u0000": True}))


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"a": {"b": {"c": {"d": 1}}}}, "extra.a.b.c.d nests deeper than 4 levels"),
        ([[[[1]]]], "extra[0][0][0][0] nests deeper than 4 levels"),
        ([1, {"a": [{"b": 2}]}], "extra[1].a[0].b nests deeper than 4 levels"),
        ({"ok": [1, 2], "x": {"a.b": 1}}, "key 'a.b' under extra.x starts with $ or contains a dot"),
        ([{"$k": 1}], "key '$k' under extra[0] starts with $ or contains a dot"),
    ],
)
def test_a_refusal_names_where_in_the_message(extra: Any, reason: str) -> None:
    assert problem_with(gateway_doc(extra=extra)) == reason


def test_only_the_pipelines_own_field_names_skip_the_key_check() -> None:
    dollar = "key '$where' under the message starts with $ or contains a dot"
    assert problem_with(gateway_doc(**{"$where": "x"})) == dollar
    assert problem_with({**gateway_doc(), 7: "x"}) == "key 7 under the message is not a string"
    # as deep as allowed, scalars and empty containers included, in the pipeline's own fields and others
    assert problem_with(gateway_doc(extra={"a": {"b": [1, {}]}}, offline_push={"ex": "", "x": {"y": []}})) is None

"""The message cache's encoding (app/store/redis/msg_cache.py): what pulls read back is what was committed."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from app.store.redis.msg_cache import decode_cached, encode_cached


def test_a_message_reads_back_as_committed_with_its_text_unescaped() -> None:
    msg: dict[str, Any] = {
        "client_msg_id": "c1",
        "content": '{"content":"grüße 你好 😀 \\"quoted\\""}',
        "seq": 7,
        "send_time": 1796074055452,
        "options": {"offlinePush": False},
        "at_user_id_list": ["u1", "u2"],
        "offline_push": None,
    }
    raw = encode_cached(msg)
    assert "你好 😀".encode() in raw  # compact UTF-8, not \\u escapes
    assert b", " not in raw and b": " not in raw
    assert decode_cached(raw) == msg
    assert decode_cached(raw.decode()) == msg  # as a decoding Redis client returns it


def test_values_orjson_refuses_are_written_and_read_back_by_the_standard_library() -> None:
    msg = {"seq": 2**70, "content": "lone \ud800 surrogate", "ex": "-" + "9" * 25}
    assert decode_cached(encode_cached(msg)) == msg


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@given(st.dictionaries(st.text(), json_values, max_size=6))
def test_any_json_document_reads_back_as_written(doc: dict[str, Any]) -> None:
    assert decode_cached(encode_cached(doc)) == doc

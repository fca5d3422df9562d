from typing import Any

import pytest

from app.core.classify import goes_offline, is_read_receipt, is_stored, json_depth, read_receipt_seq, syncs_sender


def msg(content_type: int = 101, **options: bool) -> dict[str, Any]:
    return {"content_type": content_type, "options": options}


def test_ordinary_text_is_stored_and_goes_offline() -> None:
    assert is_stored(msg()) and goes_offline(msg()) and syncs_sender(msg())


@pytest.mark.parametrize(
    "m",
    [msg(113), msg(120), msg(2200), msg(history=False), msg(persistent=False)],
)
def test_not_stored(m: dict[str, Any]) -> None:
    assert not is_stored(m)


def test_offline_rules() -> None:
    assert not goes_offline(msg(113))
    assert not goes_offline(msg(2200))
    assert not goes_offline(msg(offlinePush=False))
    assert goes_offline(msg(history=False))  # not stored, but still worth a notification


def test_read_receipts() -> None:
    assert is_read_receipt(msg(2200)) and not is_read_receipt(msg())
    assert read_receipt_seq('{"hasReadSeq": 12, "conversationID": "si_a_b"}') == 12
    assert read_receipt_seq('{"hasReadSeq": "7"}') == 7
    for bad in ["", "[]", '{"hasReadSeq": -1}', '{"hasReadSeq": true}', '{"hasReadSeq": "x"}', "{}"]:
        with pytest.raises(ValueError):
            read_receipt_seq(bad)


def test_a_deep_or_huge_read_receipt_is_a_value_error_never_a_recursion_error() -> None:
    """json.loads recurses once per level: 955 levels overflow a worker's deeper stack (P7)."""
    deep = '{"hasReadSeq": 1, "x": ' + "[" * 955 + "]" * 955 + "}"
    for bad in (deep, "[" * 100_000, '{"hasReadSeq": 1, "pad": "' + "x" * 70_000 + '"}'):
        with pytest.raises(ValueError):
            read_receipt_seq(bad)
    # brackets inside strings are text, not nesting
    assert read_receipt_seq('{"hasReadSeq": 4, "note": "' + "[" * 500 + '"}') == 4
    assert read_receipt_seq('{"hasReadSeq": 5, "note": "\\"[[[[[[[[[[\\""}') == 5


def test_json_depth_skips_strings_and_escapes() -> None:
    assert json_depth("1") == 0
    assert json_depth('{"a": [1, {"b": []}]}') == 4
    assert json_depth('["]]]", "\\\\", [["[\\"["]]]') == 3
    assert json_depth("[" * 10_000) == 10_000

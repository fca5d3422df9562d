"""The pure rules of the message operations: what a revoked or deleted message pulls as, who may
revoke, the notifications' content, and OpenIM's {"detail": ...} read receipts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from app.core import classify, msg_ops, validation
from app.core.constants import GROUP_ADMIN, GROUP_CHAT, GROUP_ORDINARY, GROUP_OWNER, MSG_REVOKE_NOTIFICATION
from app.core.errors import ImError
from tests.factories import stored_msg

NOW = 1_800_000_000_000


def message(**fields: Any) -> dict[str, Any]:
    msg = stored_msg("alice", "bob", 1, NOW - 1000)
    msg.update(seq=7, ex="x", sender_nickname="Alice", **fields)
    return msg


def test_revoked_form_hides_the_content_and_names_the_revoker() -> None:
    msg = message(content='{"content":"secret"}', at_user_id_list=["bob"], attached_info="a")
    record = msg_ops.revoke_record("alice", 0, "Alice", NOW)
    shown = msg_ops.view_for({**msg, msg_ops.REVOKE_FIELD: record}, "bob")
    assert shown["content_type"] == MSG_REVOKE_NOTIFICATION
    assert "secret" not in json.dumps(shown)
    detail = json.loads(json.loads(shown["content"])["detail"])
    assert detail == {
        "revokerID": "alice",
        "revokerRole": 0,
        "clientMsgID": msg["client_msg_id"],
        "revokerNickname": "Alice",
        "revokeTime": NOW,
        "sourceMessageSendTime": msg["send_time"],
        "sourceMessageSendID": "alice",
        "sourceMessageSenderNickname": "Alice",
        "sessionType": 1,
        "seq": 7,
        "ex": "x",
    }
    assert (shown["at_user_id_list"], shown["attached_info"]) == ([], "")
    # the form is stable: revoking the revoked form gives the same
    assert msg_ops.view_for(msg_ops.revoked_form(msg, record), "bob") == shown


def test_deleted_for_one_user_only() -> None:
    msg = message(**{msg_ops.DEL_LIST_FIELD: ["alice"]})
    mine = msg_ops.view_for(msg, "alice")
    assert (mine["status"], mine["content"]) == (4, "")
    assert msg_ops.view_for(msg, "bob") == msg
    plain = message()
    assert msg_ops.view_for(plain, "alice") == plain


def test_who_may_revoke_in_a_single_chat() -> None:
    msg = message()
    assert msg_ops.check_may_revoke(msg, "alice", False, {}, NOW, 60) == 0
    with pytest.raises(ImError) as refused:
        msg_ops.check_may_revoke(msg, "bob", False, {}, NOW, 60)
    assert refused.value.code == 1002
    late = NOW + 120_000
    with pytest.raises(ImError):
        msg_ops.check_may_revoke(msg, "alice", False, {}, late, 60)
    assert msg_ops.check_may_revoke(msg, "alice", False, {}, late, 0) == 0  # no window
    assert msg_ops.check_may_revoke(msg, "bob", True, {}, late, 60) == 0  # admin token


def test_who_may_revoke_in_a_group() -> None:
    msg = message(session_type=GROUP_CHAT, group_id="g", recv_id="")
    roles = {"alice": GROUP_ORDINARY, "owner": GROUP_OWNER, "adm": GROUP_ADMIN, "bob": GROUP_ORDINARY}
    assert msg_ops.check_may_revoke(msg, "owner", False, roles, NOW + 10**9, 60) == GROUP_OWNER
    assert msg_ops.check_may_revoke(msg, "adm", False, roles, NOW, 60) == GROUP_ADMIN
    for revoker, known in (("bob", roles), ("stranger", roles)):
        with pytest.raises(ImError):
            msg_ops.check_may_revoke(msg, revoker, False, known, NOW, 60)
    from_admin = message(session_type=GROUP_CHAT, group_id="g", recv_id="", send_id="adm")
    with pytest.raises(ImError):  # an admin may not revoke another admin's message
        msg_ops.check_may_revoke(from_admin, "adm2", False, {**roles, "adm2": GROUP_ADMIN}, NOW, 60)
    assert msg_ops.check_may_revoke(from_admin, "owner", False, roles, NOW, 60) == GROUP_OWNER


def test_system_messages_carry_the_tips_as_openim_sends_them() -> None:
    tips = msg_ops.revoke_tips("alice", message(), "si_alice_bob", NOW, False)
    doc = msg_ops.system_msg(
        "alice", "bob", "", 1, 2101, msg_ops.notification_content(tips), msg_ops.STORED_TIPS_OPTIONS, NOW, "op1"
    )
    assert (doc["msg_from"], doc["content_type"], doc["seq"], doc["operation_id"]) == (200, 2101, 0, "op1")
    assert json.loads(json.loads(doc["content"])["detail"])["sesstionType"] == 1
    assert classify.is_stored(doc)
    online = {**doc, "options": msg_ops.ONLINE_TIPS_OPTIONS}
    assert not classify.is_stored(online) and not classify.goes_offline(online)
    group = msg_ops.system_msg("o", "ignored", "g", GROUP_CHAT, 2101, "{}", {}, NOW, "")
    assert (group["recv_id"], group["group_id"]) == ("", "g") and group["operation_id"]


def test_read_receipts_in_openims_detail_form_are_accepted() -> None:
    tips = {"markAsReadUserID": "bob", "conversationID": "si_alice_bob", "seqs": [1, 2], "hasReadSeq": 2}
    wrapped = msg_ops.notification_content(tips)
    assert classify.read_receipt_seq(wrapped) == 2
    assert validation.check_read_receipt(wrapped.encode(), "bob", "si_alice_bob") == 2
    with pytest.raises(ImError):  # still speaks only for its sender
        validation.check_read_receipt(wrapped.encode(), "eve", "si_alice_bob")
    deep = json.dumps({"detail": "[" * 50 + "]" * 50})
    with pytest.raises(ValueError):
        classify.read_receipt_seq(deep)

from typing import Any, TypedDict

from app.core.push_frames import (
    OPERATION_ID,
    is_group_notification,
    is_notification,
    notification_conversation_id,
    push_payloads,
)


class GroupFields(TypedDict):
    session_type: int
    recv_id: str
    group_id: str


def msg(seq: int, op: str = "", msg_from: int = 100, content_type: int = 101, **extra: Any) -> dict[str, Any]:
    return {
        "send_id": "b",
        "recv_id": "a",
        "session_type": 1,
        "client_msg_id": f"c{seq}",
        "seq": seq,
        "msg_from": msg_from,
        "content_type": content_type,
        "content": "{}",
        OPERATION_ID: op,
        **extra,
    }


def test_one_payload_per_run_of_an_operation() -> None:
    payloads = push_payloads("si_a_b", [msg(1, "op1"), msg(2, "op1"), msg(3, "op2"), msg(4, "op1")])
    assert [(op, [m.seq for m in push.msgs["si_a_b"].Msgs]) for op, push in payloads] == [
        ("op1", [1, 2]),
        ("op2", [3]),
        ("op1", [4]),
    ]
    assert all(not push.notificationMsgs for _, push in payloads)


def test_messages_without_an_operation_share_one_payload() -> None:
    stored_before = {k: v for k, v in msg(1).items() if k != OPERATION_ID}
    [(op, push)] = push_payloads("si_a_b", [stored_before, msg(2)])
    assert op == "" and [m.seq for m in push.msgs["si_a_b"].Msgs] == [1, 2]


def test_system_notifications_go_to_notification_msgs_under_n_ids() -> None:
    receipt = msg(0, "op3", msg_from=200, content_type=2200)
    assert is_notification(receipt) and not is_notification(msg(1, content_type=2200))
    assert notification_conversation_id(receipt) == "n_a_b"
    assert notification_conversation_id({"session_type": 3, "group_id": "g1"}) == "n_g1"
    [(_, chat), (op, note)] = push_payloads("si_a_b", [msg(5, "op3"), receipt])
    assert [m.seq for m in chat.msgs["si_a_b"].Msgs] == [5] and not chat.notificationMsgs
    assert op == "op3" and not note.msgs
    assert [m.contentType for m in note.notificationMsgs["n_a_b"].Msgs] == [2200]


def test_group_notifications_travel_in_the_group_conversation_and_as_notifications() -> None:
    group: GroupFields = {"session_type": 3, "recv_id": "", "group_id": "g1"}
    created = msg(1, "op4", msg_from=200, content_type=1501, **group)
    chat = msg(2, "op4", **group)
    assert is_group_notification(created) and not is_notification(created)
    assert not is_group_notification(chat) and not is_group_notification(msg(3, msg_from=200, content_type=2200))
    [(op, push)] = push_payloads("sg_g1", [created, chat])
    assert op == "op4"
    assert [m.seq for m in push.msgs["sg_g1"].Msgs] == [1, 2]
    assert list(push.notificationMsgs) == ["n_g1"]
    assert [(m.seq, m.contentType) for m in push.notificationMsgs["n_g1"].Msgs] == [(1, 1501)]


def test_a_groups_revoke_tips_also_travel_as_notifications() -> None:
    group: GroupFields = {"session_type": 3, "recv_id": "", "group_id": "g1"}
    tips = msg(4, "op5", msg_from=200, content_type=2101, **group)
    assert is_group_notification(tips) and not is_group_notification({**tips, "msg_from": 100})
    [(_, push)] = push_payloads("sg_g1", [tips])
    assert [(m.seq, m.contentType) for m in push.msgs["sg_g1"].Msgs] == [(4, 2101)]
    assert [(m.seq, m.contentType) for m in push.notificationMsgs["n_g1"].Msgs] == [(4, 2101)]

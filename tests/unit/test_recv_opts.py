import pytest

from app.core.constants import HAS_READ_RECEIPT, MSG_FROM_SYSTEM, MSG_FROM_USER, TEXT, TYPING
from app.core.recv_opts import NOT_RECEIVE, RECEIVE, RECEIVE_NOT_NOTIFY, Decision, single_chat_decision

GROUP_CREATED_TIPS = 1501


@pytest.mark.parametrize(
    ("global_opt", "conv_opt", "content_type", "expected"),
    [
        (RECEIVE, RECEIVE, TEXT, Decision.DELIVER),
        (RECEIVE, NOT_RECEIVE, TEXT, Decision.REFUSE),
        (RECEIVE, NOT_RECEIVE, TYPING, Decision.REFUSE),
        (RECEIVE, NOT_RECEIVE, HAS_READ_RECEIPT, Decision.DELIVER),  # OpenIM's ExcludeContentType
        (RECEIVE, RECEIVE_NOT_NOTIFY, TEXT, Decision.NO_OFFLINE_PUSH),
        # the global option is looked at first, and decides alone when it is not 0
        (NOT_RECEIVE, RECEIVE, TEXT, Decision.REFUSE),
        (NOT_RECEIVE, RECEIVE_NOT_NOTIFY, TEXT, Decision.REFUSE),
        (RECEIVE_NOT_NOTIFY, RECEIVE, TEXT, Decision.NO_OFFLINE_PUSH),
        (RECEIVE_NOT_NOTIFY, NOT_RECEIVE, TEXT, Decision.NO_OFFLINE_PUSH),
        # notifications are never refused
        (NOT_RECEIVE, NOT_RECEIVE, GROUP_CREATED_TIPS, Decision.DELIVER),
        (RECEIVE, NOT_RECEIVE, GROUP_CREATED_TIPS, Decision.DELIVER),
    ],
)
def test_single_chat_decision(global_opt: int, conv_opt: int, content_type: int, expected: Decision) -> None:
    assert single_chat_decision(global_opt, conv_opt, content_type, MSG_FROM_USER) is expected


def test_the_servers_read_receipt_is_a_notification() -> None:
    for global_opt in (NOT_RECEIVE, RECEIVE_NOT_NOTIFY):
        assert single_chat_decision(global_opt, NOT_RECEIVE, HAS_READ_RECEIPT, MSG_FROM_SYSTEM) is Decision.DELIVER
    # a client's own receipt still meets the global option
    assert single_chat_decision(NOT_RECEIVE, RECEIVE, HAS_READ_RECEIPT, MSG_FROM_USER) is Decision.REFUSE

"""Key names are data: deployments hold keys under exactly these texts (and hash tags)."""

from __future__ import annotations

from app.store.redis import keys


def test_key_texts_stay_as_they_are() -> None:
    assert [
        keys.malloc_seq_key("si_a_b"),
        keys.max_seq_key("si_a_b"),
        keys.msg_cache_key("si_a_b", 7),
        keys.client_msg_key("si_a_b"),
        keys.user_read_seq_key("si_a_b", "a"),
        keys.conversation_ready_key("si_a_b"),
        keys.client_ack_key("si_a_b", "cid"),
        keys.online_key("a"),
        keys.push_channel("node1"),
        keys.logged_out_key("a", 5),
        keys.group_members_key("g1"),
        keys.getui_token_key("app1"),
        keys.fcm_token_key("a", 2),
        keys.dead_letters_key("persist"),
        keys.journal_key("transfer.0"),
        keys.lease_key("transfer.0"),
        keys.ONLINE_EVENTS_CHANNEL,
    ] == [
        "MALLOC_SEQ:{si_a_b}",
        "MAX_SEQ:{si_a_b}",
        "MSG_CACHE:{si_a_b}:7",
        "CLIENT_MSG:{si_a_b}",
        "SEQ_USER_READ:{si_a_b}:a",
        "CONV_READY:{si_a_b}",
        "CLIENT_ACK:{si_a_b}:cid",
        "ONLINE:{a}",
        "PUSH_NODE:node1",
        "LOGGED_OUT:{a}:5",
        "GROUP_MEMBERS:{g1}",
        "GETUI_TOKEN:app1",
        "FCM_TOKEN:{a}:2",
        "DEAD_LETTERS:persist",
        "JOURNAL:{transfer.0}",
        "LEASE:{transfer}:transfer.0",
        "USER_ONLINE_EVENTS",
    ]
    # sha256 of "tok": the key names a token without holding it
    assert keys.kicked_token_key("tok") == (
        "KICKED_TOKEN:1a7674eb4ee78df7e1ac439a93c3fa8e3c945784d4dec9fd8e3011738b2f1d62"
    )

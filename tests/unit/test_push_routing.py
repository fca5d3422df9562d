from typing import Any

from app.tasks.push import plan_deliveries, recipients


def msg(send: str, recv: str, platform: int = 7, content_type: int = 101, **options: bool) -> dict[str, Any]:
    return {
        "session_type": 1,
        "send_id": send,
        "recv_id": recv,
        "sender_platform_id": platform,
        "seq": 1,
        "content_type": content_type,
        "options": options,
    }


def test_recipients_single_chat() -> None:
    assert recipients(msg("a", "b", 7)) == [("b", 0), ("a", 7)]
    assert recipients(msg("a", "a", 7)) == [("a", 0)]


def test_routes_only_to_nodes_where_recipients_are_online() -> None:
    committed = {"si_a_b": [msg("a", "b", 7)], "si_a_c": [msg("a", "c", 7)]}
    online = {"b": {5: "node1", 1: "node2"}, "a": {7: "node1", 3: "node3"}}
    by_node, offline = plan_deliveries(committed, online)
    assert set(by_node) == {"node1", "node2", "node3"}
    node1 = {d["conversation_id"]: d["users"] for d in by_node["node1"]}
    # node1 holds b and a's sending device; a's sending platform is skipped there
    assert node1 == {"si_a_b": [["b", 0]]}
    assert {d["conversation_id"] for d in by_node["node3"]} == {"si_a_b", "si_a_c"}
    assert offline == {"si_a_c": ["c"]}


def test_everyone_offline() -> None:
    by_node, offline = plan_deliveries({"si_a_b": [msg("a", "b")]}, {})
    assert by_node == {}
    assert offline == {"si_a_b": ["b"]}


def test_sender_sync_off_skips_the_senders_devices() -> None:
    assert recipients(msg("a", "b", 7, senderSync=False)) == [("b", 0)]


def test_typing_and_no_offline_push_never_go_offline() -> None:
    committed = {
        "si_a_b": [msg("a", "b", content_type=113)],
        "si_a_c": [msg("a", "c", offlinePush=False)],
        "si_a_d": [msg("a", "d", content_type=2200), msg("a", "d")],
    }
    _, offline = plan_deliveries(committed, {})
    assert offline == {"si_a_d": ["d"]}

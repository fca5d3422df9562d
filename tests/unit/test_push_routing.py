from typing import Any

from app.store.redis.online import OnlineEntry
from app.tasks.push import plan_deliveries, recipients


def msg(send: str, recv: str, platform: int = 7, content_type: int = 101, **options: bool) -> dict[str, Any]:
    return {
        "session_type": 1,
        "send_id": send,
        "recv_id": recv,
        "group_id": "",
        "sender_platform_id": platform,
        "seq": 1,
        "content_type": content_type,
        "options": options,
    }


def group_msg(send: str, group: str, seq: int = 1, leaving: list[str] | None = None, **options: bool) -> dict[str, Any]:
    out = {**msg(send, "", **options), "session_type": 3, "recv_id": "", "group_id": group, "seq": seq}
    if leaving:
        out["leaving_user_ids"] = leaving
    return out


def on(*entries: tuple[int, str]) -> list[OnlineEntry]:
    return [OnlineEntry(platform, node, False) for platform, node in entries]


def test_recipients_single_chat() -> None:
    # the sender on every device, the sending one included (OpenIM's SDKs learn their seq from it)
    assert recipients(msg("a", "b", 7)) == ["b", "a"]
    assert recipients(msg("a", "a", 7)) == ["a"]


def test_sender_sync_off_skips_the_senders_devices() -> None:
    assert recipients(msg("a", "b", 7, senderSync=False)) == ["b"]


def test_group_recipients_are_the_members_and_those_leaving() -> None:
    assert recipients(group_msg("a", "g"), {"a", "b", "c"}) == ["b", "c", "a"]
    assert recipients(group_msg("admin", "g", leaving=["k"]), {"a", "b"}) == ["a", "b", "k", "admin"]
    assert recipients(group_msg("a", "g", senderSync=False), {"a", "b"}) == ["b"]


def test_routes_only_to_nodes_where_recipients_are_online() -> None:
    committed = {"si_a_b": [msg("a", "b", 7)], "si_a_c": [msg("a", "c", 7)]}
    online = {"b": on((5, "node1"), (1, "node2")), "a": on((7, "node1"), (3, "node3"))}
    plan = plan_deliveries(committed, online)
    assert set(plan.by_node) == {"node1", "node2", "node3"}
    node1 = {d["conversation_id"]: d["users"] for d in plan.by_node["node1"]}
    assert node1 == {"si_a_b": ["b", "a"], "si_a_c": ["a"]}
    assert {d["conversation_id"] for d in plan.by_node["node3"]} == {"si_a_b", "si_a_c"}
    assert [(conv, users) for conv, users, _ in plan.offline] == [("si_a_c", ["c"])]


def test_everyone_offline_but_the_sender_is_never_offline_pushed() -> None:
    plan = plan_deliveries({"si_a_b": [msg("a", "b")]}, {})
    assert plan.by_node == {}
    assert [(conv, users) for conv, users, _ in plan.offline] == [("si_a_b", ["b"])]


def test_typing_and_no_offline_push_never_go_offline() -> None:
    committed = {
        "si_a_b": [msg("a", "b", content_type=113)],
        "si_a_c": [msg("a", "c", offlinePush=False)],
        "si_a_d": [msg("a", "d", content_type=2200), msg("a", "d")],
    }
    plan = plan_deliveries(committed, {})
    assert [(conv, users, len(msgs)) for conv, users, msgs in plan.offline] == [("si_a_d", ["d"], 1)]


def test_ios_in_background_is_not_online_for_push() -> None:
    committed = {"si_a_b": [msg("a", "b", 7)]}
    plan = plan_deliveries(committed, {"b": [OnlineEntry(1, "node1", True)]})
    assert plan.by_node == {}
    assert [users for _, users, _ in plan.offline] == [["b"]]
    plan = plan_deliveries(committed, {"b": [OnlineEntry(1, "node1", True), OnlineEntry(2, "node2", False)]})
    assert set(plan.by_node) == {"node2"}
    assert plan.offline == []


def test_only_a_phone_socket_spares_the_offline_push() -> None:
    committed = {"si_a_b": [msg("a", "b", 7)]}
    for platforms, offline in [((5,), True), ((3, 4, 7), True), ((5, 1), False), ((2,), False), ((8, 9), True)]:
        plan = plan_deliveries(committed, {"b": on(*((p, "n1") for p in platforms))})
        assert set(plan.by_node) == {"n1"}, platforms  # pushed online on every live platform
        assert [users for _, users, _ in plan.offline] == ([["b"]] if offline else []), platforms
    # web and iOS in the background: the web socket gets it, and so does the phone, by offline push
    plan = plan_deliveries(committed, {"b": [OnlineEntry(5, "n1", False), OnlineEntry(1, "n2", True)]})
    assert set(plan.by_node) == {"n1"} and [users for _, users, _ in plan.offline] == [["b"]]


def test_group_fan_out_once_per_node_with_that_nodes_members() -> None:
    members = {f"u{i}" for i in range(10)}
    online = {"u1": on((5, "n1")), "u2": on((7, "n1"), (2, "n2")), "u3": on((2, "n2"))}
    plan = plan_deliveries({"sg_g": [group_msg("u0", "g")]}, online, {"g": members})
    assert {node: [d["users"] for d in ds] for node, ds in plan.by_node.items()} == {
        "n1": [["u1", "u2"]],
        "n2": [["u2", "u3"]],
    }
    ((conv, offline_users, _),) = plan.offline
    # u1 is on web only: pushed online and notified on its phone
    assert conv == "sg_g" and sorted(offline_users) == sorted(members - {"u0", "u2", "u3"})


def test_a_leaving_member_gets_the_notification_and_nothing_after_it() -> None:
    online = {"k": on((5, "n1")), "m": on((5, "n1"))}
    msgs = [group_msg("m", "g", 1), group_msg("admin", "g", 2, leaving=["k"]), group_msg("m", "g", 3)]
    plan = plan_deliveries({"sg_g": msgs}, online, {"g": {"m"}})
    deliveries = [(d["users"], [x["seq"] for x in d["msgs"]]) for d in plan.by_node["n1"]]
    assert deliveries == [(["m"], [1]), (["k", "m"], [2]), (["m"], [3])]

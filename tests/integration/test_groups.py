"""Group chat through the whole stack: routed fan-out over two gateway nodes, offline push for the
rest, receive options, and membership changes with their notifications (issue 6)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from app.cli.client import ClientError, ImClient
from app.core.constants import ANDROID, LINUX
from app.services.auth import mint_token
from tests.integration.helpers import admin_token, eventually, login, rest

MEMBER_KICKED = 1508
GROUP_DISMISSED = 1511


@pytest.fixture(scope="module")
def group_nodes(gateways: Callable[..., Any]) -> tuple[Any, Any, Any]:
    """Two gateway nodes for members and a third that only holds a non-member."""
    return gateways("gw-group-a"), gateways("gw-group-b"), gateways("gw-group-idle")


@pytest.fixture(scope="module")
def admin(stack: Any) -> str:
    return admin_token(stack.gateway_port)


def create_group(stack: Any, admin: str, group_id: str, owner: str, members: list[str]) -> None:
    answer = rest(
        stack.gateway_port,
        "/group/create_group",
        {"ownerUserID": owner, "memberUserIDs": members, "groupInfo": {"groupID": group_id, "groupName": "g"}},
        admin,
    )
    assert answer["errCode"] == 0, answer


def connect(node: Any, user: str, platform_id: int = LINUX) -> ImClient:
    client = ImClient(node.ws_url, user, platform_id, mint_token(user, platform_id))
    client.newest_seqs()  # answered: registered online before anything is sent
    return client


def pushed_ids(client: ImClient, wait: float) -> list[str]:
    """Everything pushed to this client within `wait` seconds."""
    return [m["clientMsgID"] for m in client.pushed_msgs(10_000, timeout=wait)]


def pushes_until(client: ImClient, client_msg_id: str, timeout: float = 20) -> list[str]:
    """Pushed clientMsgIDs until this one arrived, then whatever else comes within half a second."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while client_msg_id not in got and time.monotonic() < deadline:
        got += [m["clientMsgID"] for m in client.pushed_msgs(1, timeout=max(0.0, deadline - time.monotonic()))]
    return got + pushed_ids(client, 0.5)


def pushes_of_type(client: ImClient, content_type: int, timeout: float = 15) -> list[dict[str, Any]]:
    """Pushed messages of this content type, once the first of them arrived (plus half a second more)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while not got and time.monotonic() < deadline:
        pushed = client.pushed_msgs(1, timeout=max(0.0, deadline - time.monotonic()))
        got += [m for m in pushed if m["contentType"] == content_type]
    return got + [m for m in client.pushed_msgs(10_000, timeout=0.5) if m["contentType"] == content_type]


def test_fifty_member_group_fans_out_to_online_members_once_and_offline_to_the_rest(
    stack: Any, provider: Any, group_nodes: tuple[Any, Any, Any], admin: str, uid: str
) -> None:
    node_a, node_b, idle = group_nodes
    members = [f"m{i}-{uid}" for i in range(50)]
    group_id = f"g{uid}"
    create_group(stack, admin, group_id, members[0], members[1:])
    # on phones: a phone's live socket is what spares a member the offline push (OpenIM)
    online = {u: connect(node_a if i % 2 == 0 else node_b, u, ANDROID) for i, u in enumerate(members[:20])}
    outsider = connect(idle, f"out{uid}")
    idle_before = stack.metric("gw-group-idle", "push_deliveries_received_total")
    a_before = stack.metric("gw-group-a", "push_deliveries_received_total")
    b_before = stack.metric("gw-group-b", "push_deliveries_received_total")
    try:
        sent = online[members[0]].send_group_text(group_id, "hello group", client_msg_id=f"hello-{uid}")
        assert sent["clientMsgID"] == f"hello-{uid}"
        for user, client in online.items():
            got = pushes_until(client, f"hello-{uid}")  # anything after it would be a duplicate
            assert got.count(f"hello-{uid}") == 1, f"{user} got {got}"
        # the other 30 go to offline push, each exactly once; online members never do
        offline_wanted = set(members[20:])

        def offline_users() -> list[str]:
            return [
                u
                for r in provider.received
                if r["conversationID"] == f"sg_{group_id}"
                and any(m["clientMsgID"] == f"hello-{uid}" for m in r["msgs"])
                for u in r["userIDs"]
            ]

        assert eventually(lambda: set(offline_users()) == offline_wanted, timeout=30), offline_users()
        time.sleep(0.5)
        assert sorted(offline_users()) == sorted(offline_wanted)
        # only the two nodes holding members saw the push
        assert stack.metric("gw-group-a", "push_deliveries_received_total") > a_before
        assert stack.metric("gw-group-b", "push_deliveries_received_total") > b_before
        assert stack.metric("gw-group-idle", "push_deliveries_received_total") == idle_before
        assert pushed_ids(outsider, 0.5) == []
    finally:
        for client in [*online.values(), outsider]:
            client.close()


def test_muted_member_is_pushed_online_but_not_offline(stack: Any, provider: Any, admin: str, uid: str) -> None:
    owner, muted_online, muted_offline, plain = (f"{n}{uid}" for n in ("o", "mon", "moff", "p"))
    group_id = f"mute{uid}"
    create_group(stack, admin, group_id, owner, [muted_online, muted_offline, plain])
    for user in (muted_online, muted_offline):
        answer = rest(
            stack.gateway_port,
            "/conversation/set_conversations",
            {"userIDs": [user], "conversation": {"conversationID": f"sg_{group_id}", "recvMsgOpt": {"value": 2}}},
            mint_token(user, LINUX),
        )
        assert answer["errCode"] == 0, answer
    sender, listener = login(stack, owner), login(stack, muted_online)
    try:
        sender.send_group_text(group_id, "quiet please", client_msg_id=f"q-{uid}")
        # the group's creation notification may still be on its way, so wait for this message by id
        assert pushes_until(listener, f"q-{uid}").count(f"q-{uid}") == 1

        def offline_for(user: str) -> int:
            return sum(1 for r in provider.for_user(user) if r["conversationID"] == f"sg_{group_id}")

        assert eventually(lambda: offline_for(plain) == 1, timeout=30)
        time.sleep(1.0)
        assert offline_for(muted_offline) == 0
        assert offline_for(muted_online) == 0
    finally:
        sender.close()
        listener.close()


def test_kicked_member_gets_the_kick_notification_and_nothing_after_it(stack: Any, admin: str, uid: str) -> None:
    owner, kicked_id, stayer_id = f"o{uid}", f"k{uid}", f"s{uid}"
    group_id = f"kick{uid}"
    conv = f"sg_{group_id}"
    create_group(stack, admin, group_id, owner, [kicked_id, stayer_id])
    sender, kicked, stayer = login(stack, owner), login(stack, kicked_id), login(stack, stayer_id)
    try:
        sender.send_group_text(group_id, "before", client_msg_id=f"before-{uid}")
        assert f"before-{uid}" in pushes_until(kicked, f"before-{uid}")
        answer = rest(
            stack.gateway_port, "/group/kick_group", {"groupID": group_id, "kickedUserIDs": [kicked_id]}, admin
        )
        assert answer["errCode"] == 0, answer
        kick_pushes = pushes_of_type(kicked, MEMBER_KICKED)
        # one message, in the group's conversation and again among the notifications for OpenIM's SDKs
        assert len({m["clientMsgID"] for m in kick_pushes}) == 1
        kick_seq = int(kick_pushes[0]["seq"])
        sender.send_group_text(group_id, "after", client_msg_id=f"after-{uid}")
        assert f"after-{uid}" in pushes_until(stayer, f"after-{uid}")
        time.sleep(1.0)
        assert pushed_ids(kicked, 0.5) == [], "nothing reaches a kicked member after its notification"
        # reading stops at the notification; sending is refused
        assert kicked.newest_seqs()[conv] == kick_seq
        pulled = kicked.pull_range(conv, 1, kick_seq + 10)
        assert max(int(m["seq"]) for m in pulled["Msgs"]) == kick_seq
        with pytest.raises(ClientError) as refused:
            kicked.send_group_text(group_id, "let me back")
        assert refused.value.code == 1203
        assert stayer.newest_seqs()[conv] == kick_seq + 1
    finally:
        for client in (sender, kicked, stayer):
            client.close()


def test_non_member_cannot_send_to_or_pull_a_group(stack: Any, admin: str, uid: str) -> None:
    group_id = f"closed{uid}"
    create_group(stack, admin, group_id, f"o{uid}", [f"m{uid}"])
    stranger = login(stack, f"x{uid}")
    try:
        with pytest.raises(ClientError) as refused:
            stranger.send_group_text(group_id, "let me in")
        assert refused.value.code == 1203
        with pytest.raises(ClientError) as denied:
            stranger.pull_range(f"sg_{group_id}", 1, 10)
        assert denied.value.code == 1002
        assert f"sg_{group_id}" not in stranger.newest_seqs()
        members = rest(
            stack.gateway_port, "/group/get_group_member_list", {"groupID": group_id}, mint_token(f"x{uid}", LINUX)
        )
        assert members["errCode"] == 1203
    finally:
        stranger.close()


def test_invited_member_reads_from_joining_on_and_dismiss_ends_the_group(stack: Any, admin: str, uid: str) -> None:
    owner_id, late_id = f"o{uid}", f"late{uid}"
    group_id = f"inv{uid}"
    conv = f"sg_{group_id}"
    create_group(stack, admin, group_id, owner_id, [f"m{uid}"])
    owner = login(stack, owner_id)
    late: ImClient | None = None
    try:
        owner.send_group_text(group_id, "before you came", client_msg_id=f"early-{uid}")
        assert eventually(lambda: owner.newest_seqs().get(conv, 0) >= 2)
        before = owner.newest_seqs()[conv]
        token = mint_token(owner_id, LINUX)  # the owner may invite
        answer = rest(
            stack.gateway_port, "/group/invite_user_to_group", {"groupID": group_id, "invitedUserIDs": [late_id]}, token
        )
        assert answer["errCode"] == 0, answer
        late = login(stack, late_id)
        owner.send_group_text(group_id, "welcome", client_msg_id=f"welcome-{uid}")
        assert f"welcome-{uid}" in pushes_until(late, f"welcome-{uid}")
        newest = late.newest_seqs()[conv]
        pulled = late.pull_range(conv, 1, newest)
        seqs = [int(m["seq"]) for m in pulled["Msgs"]]
        assert seqs and min(seqs) > before, "no history from before joining"
        assert f"early-{uid}" not in [m["clientMsgID"] for m in pulled["Msgs"]]
        listed = rest(stack.gateway_port, "/group/get_group_member_list", {"groupID": group_id}, token)["data"]
        assert {m["userID"] for m in listed["members"]} == {owner_id, f"m{uid}", late_id}
        # dismissed: everyone gets the notification, then the group takes no more messages
        assert rest(stack.gateway_port, "/group/dismiss_group", {"groupID": group_id}, token)["errCode"] == 0
        assert eventually(
            lambda: any(m["contentType"] == GROUP_DISMISSED for m in late.pushed_msgs(1, timeout=1)),
            timeout=20,
        )
        with pytest.raises(ClientError) as refused:
            owner.send_group_text(group_id, "anyone?")
        assert refused.value.code == 1203
        again = rest(
            stack.gateway_port, "/group/invite_user_to_group", {"groupID": group_id, "invitedUserIDs": ["z"]}, admin
        )
        assert again["errCode"] == 1204
    finally:
        owner.close()
        if late is not None:
            late.close()


def test_group_rest_needs_the_right_token(stack: Any, admin: str, uid: str) -> None:
    group_id = f"auth{uid}"
    member = mint_token(f"m{uid}", LINUX)
    body = {"ownerUserID": f"o{uid}", "memberUserIDs": [f"m{uid}"], "groupInfo": {"groupID": group_id}}
    assert rest(stack.gateway_port, "/group/create_group", body, member)["errCode"] == 1002
    assert rest(stack.gateway_port, "/group/create_group", body)["errCode"] in (1501, 1502, 1503)
    create_group(stack, admin, group_id, f"o{uid}", [f"m{uid}"])
    assert rest(stack.gateway_port, "/group/create_group", body, admin)["errCode"] == 1202
    kick = {"groupID": group_id, "kickedUserIDs": [f"o{uid}"]}
    assert rest(stack.gateway_port, "/group/kick_group", kick, member)["errCode"] == 1002
    quit_other = {"groupID": group_id, "userID": f"o{uid}"}
    assert rest(stack.gateway_port, "/group/quit_group", quit_other, member)["errCode"] == 1002
    assert (
        rest(stack.gateway_port, "/group/quit_group", {"groupID": group_id, "userID": f"m{uid}"}, member)["errCode"]
        == 0
    )
    assert (
        rest(stack.gateway_port, "/group/quit_group", {"groupID": group_id, "userID": f"m{uid}"}, member)["errCode"]
        == 1203
    )
    assert (
        rest(stack.gateway_port, "/group/kick_group", {"groupID": "nope" + uid, "kickedUserIDs": ["a"]}, admin)[
            "errCode"
        ]
        == 1201
    )


def test_group_sync_calls_answer_from_membership(stack: Any, admin: str, uid: str) -> None:
    """What OpenIM's SDKs sync after a login: versions are checksums of the lists, so the same
    version again answers "nothing new", a change answers the whole list; groups the user is not
    in are left out. A group created with its owner's token and no groupID gets one."""
    owner, member, late = f"o{uid}", f"m{uid}", f"l{uid}"
    users = [{"userID": u, "nickname": f"nick {u}", "faceURL": ""} for u in (owner, member, late)]
    assert rest(stack.gateway_port, "/user/user_register", {"users": users}, admin)["errCode"] == 0
    token = {u: mint_token(u, LINUX) for u in (owner, member, late)}
    client = login(stack, member)
    try:
        body = {"ownerUserID": owner, "memberUserIDs": [member], "groupInfo": {"groupName": f"sync {uid}"}}
        created = rest(stack.gateway_port, "/group/create_group", body, token[owner])
        assert created["errCode"] == 0, created
        info = created["data"]["groupInfo"]
        group_id = info["groupID"]
        assert len(group_id) == 32 and (info["groupName"], info["memberCount"], info["ownerUserID"]) == (
            f"sync {uid}",
            2,
            owner,
        )
        # the creation notification is pushed with the createGroup request's operationID
        push = client.next_push(timeout=15)
        [note] = push["data"]["msgs"][f"sg_{group_id}"]["Msgs"]
        assert int(note["contentType"]) == 1501 and push["operationID"]

        def call(path: str, body: dict[str, Any], user: str = member) -> Any:
            answer = rest(stack.gateway_port, path, body, token[user])
            assert answer["errCode"] == 0, answer
            return answer["data"]

        ids = call("/group/get_full_join_group_ids", {"userID": member, "idHash": 0})
        assert ids["groupIDs"] == [group_id] and ids["version"] > 0
        joined = call("/group/get_incremental_join_groups", {"userID": member, "version": 0, "versionID": ""})
        assert joined["full"] and [g["groupID"] for g in joined["insert"]] == [group_id]
        again = {"userID": member, "version": joined["version"], "versionID": joined["versionID"]}
        unchanged = call("/group/get_incremental_join_groups", again)
        assert (unchanged["full"], unchanged["insert"], unchanged["version"]) == (False, None, joined["version"])
        listed = call(
            "/group/get_joined_group_list", {"fromUserID": member, "pagination": {"pageNumber": 1, "showNumber": 10}}
        )
        assert listed["total"] == 1 and listed["groups"] == joined["insert"]

        elsewhere = f"other{uid}"
        create_group(stack, admin, elsewhere, late, [])
        reqs = [
            {"groupID": group_id, "version": 0, "versionID": ""},
            {"groupID": elsewhere, "version": 0, "versionID": ""},
        ]
        batch = call("/group/get_incremental_group_members_batch", {"userID": member, "reqList": reqs})["respList"]
        assert list(batch) == [group_id], "a group the user is not in is left out"
        first = batch[group_id]
        assert first["full"] and first["group"]["groupID"] == group_id
        assert sorted((m["userID"], m["nickname"], m["roleLevel"]) for m in first["insert"]) == [
            (member, f"nick {member}", 20),
            (owner, f"nick {owner}", 100),
        ]
        same = [{"groupID": group_id, "version": first["version"], "versionID": first["versionID"]}]
        second = call("/group/get_incremental_group_members_batch", {"userID": member, "reqList": same})["respList"]
        same_members = second[group_id]
        assert (same_members["full"], same_members["insert"], "group" in same_members) == (False, None, False)

        # a member joins: the same version now answers the whole new list
        invite = {"groupID": group_id, "invitedUserIDs": [late]}
        assert rest(stack.gateway_port, "/group/invite_user_to_group", invite, token[owner])["errCode"] == 0
        third = call("/group/get_incremental_group_members_batch", {"userID": member, "reqList": same})["respList"]
        assert third[group_id]["full"] and {m["userID"] for m in third[group_id]["insert"]} == {owner, member, late}
        assert third[group_id]["version"] != first["version"]
        full_ids = call("/group/get_full_group_member_user_ids", {"groupID": group_id, "idHash": 0})
        assert sorted(full_ids["userIDs"]) == sorted([owner, member, late])
        wanted = {"groupID": group_id, "userIDs": [late, "nobody"]}
        assert [m["userID"] for m in call("/group/get_group_members_info", wanted)["members"]] == [late]
        assert call("/group/get_groups_info", {"groupIDs": [group_id, elsewhere]})["groupInfos"][0]["memberCount"] == 3
        assert len(call("/group/get_groups_info", {"groupIDs": [group_id, elsewhere]})["groupInfos"]) == 1

        # the member joins one more group: the old join-groups version answers just that one, as an
        # incremental insert (which the core SDK announces); after leaving one, the whole list
        body = {"ownerUserID": owner, "memberUserIDs": [member], "groupInfo": {"groupName": f"more {uid}"}}
        more = rest(stack.gateway_port, "/group/create_group", body, token[owner])["data"]["groupInfo"]["groupID"]
        grown = call("/group/get_incremental_join_groups", again)
        assert (grown["full"], [g["groupID"] for g in grown["insert"]]) == (False, [more])
        assert grown["version"] != joined["version"]
        latest = {"userID": member, "version": grown["version"], "versionID": grown["versionID"]}
        assert rest(stack.gateway_port, "/group/quit_group", {"groupID": more}, token[member])["errCode"] == 0
        shrunk = call("/group/get_incremental_join_groups", latest)
        assert (shrunk["full"], [g["groupID"] for g in shrunk["insert"]]) == (True, [group_id])
    finally:
        client.close()

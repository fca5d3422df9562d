"""Offline push as OpenIM decides it, through the whole stack (webhook provider imitated locally):
which devices spare a user the notification, receive options, logout, and unread badges."""

from __future__ import annotations

import time
from typing import Any

import pytest

from app.cli.client import ClientError, ImClient
from app.core import recv_opts
from app.core.constants import ANDROID, IOS, LINUX, WEB
from app.core.conversation import single_conversation_id
from app.services.auth import mint_token
from app.store.redis import badges, push_tokens
from tests.fake_providers import FakeProvider
from tests.integration.helpers import admin_token, eventually, login, rest


def connect(stack: Any, user: str, platform_id: int) -> ImClient:
    client = ImClient(stack.ws_url, user, platform_id, mint_token(user, platform_id))
    client.newest_seqs()  # answered: registered online before anything is sent
    return client


def offline_ids(provider: FakeProvider, user: str) -> list[str]:
    return [m["clientMsgID"] for post in provider.for_user(user) for m in post["msgs"]]


def settled(provider: FakeProvider, stack: Any, sender: ImClient, uid: str) -> None:
    """Offline pushes of what was sent before are done: a later message to a user who is offline
    everywhere reached the provider (the offline worker takes its tasks in order)."""
    sentinel = f"sentinel{uid}"
    cid = sender.send_text(sentinel, "after everything else")["clientMsgID"]
    assert eventually(lambda: cid in offline_ids(provider, sentinel), timeout=30)


def test_only_a_phone_socket_spares_the_offline_push(stack: Any, provider: FakeProvider, uid: str) -> None:
    alice, web_user, phone_user, both = f"alice{uid}", f"web{uid}", f"phone{uid}", f"both{uid}"
    with (
        login(stack, alice) as a,
        connect(stack, web_user, WEB) as web,
        connect(stack, phone_user, ANDROID) as phone,
        connect(stack, both, LINUX) as desktop,
        connect(stack, both, IOS) as iphone,
    ):
        to_web = a.send_text(web_user, "web only")["clientMsgID"]
        to_phone = a.send_text(phone_user, "phone online")["clientMsgID"]
        to_both = a.send_text(both, "desktop and phone")["clientMsgID"]
        # everyone online gets the message on every socket
        for client, cid in ((web, to_web), (phone, to_phone), (desktop, to_both), (iphone, to_both)):
            assert [m["clientMsgID"] for m in client.pushed_msgs(1, timeout=15)] == [cid]
        # web only: notified on the phone too, as OpenIM does
        assert eventually(lambda: offline_ids(provider, web_user) == [to_web], timeout=30)
        settled(provider, stack, a, uid)
        assert offline_ids(provider, phone_user) == []
        assert offline_ids(provider, both) == []


def test_logout_forgets_the_devices_push_token(stack: Any, uid: str) -> None:
    bob = f"bob{uid}"
    for platform in (ANDROID, IOS):
        body = {"platformID": platform, "fcmToken": f"dev-{platform}-{uid}", "account": bob, "expireTime": 0}
        assert rest(stack.gateway_port, "/third/fcm_update_token", body, mint_token(bob, platform))["errCode"] == 0
    assert push_tokens.get_fcm_tokens([bob], [ANDROID, IOS]) == {
        bob: {ANDROID: f"dev-{ANDROID}-{uid}", IOS: f"dev-{IOS}-{uid}"}
    }
    with connect(stack, bob, ANDROID) as phone:
        assert phone.logout() == {}
        assert phone.closed.wait(10)
    # the Android device is logged out; the iPhone still gets notifications
    assert push_tokens.get_fcm_tokens([bob], [ANDROID, IOS]) == {bob: {IOS: f"dev-{IOS}-{uid}"}}


def badges_sent(provider: FakeProvider, user: str, conv: str) -> list[int]:
    return [post["badges"][user] for post in provider.for_user(user) if post["conversationID"] == conv]


def test_badge_counts_unread_messages_and_resets_on_read(stack: Any, provider: FakeProvider, uid: str) -> None:
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    with_alice, with_carol = single_conversation_id(alice, bob), single_conversation_id(carol, bob)
    with login(stack, alice) as a, login(stack, carol) as c:
        for i in range(3):
            a.send_text(bob, f"unread {i}")
            assert eventually(lambda: len(offline_ids(provider, bob)) == i + 1, timeout=30)  # noqa: B023
        c.send_text(bob, "from carol")
        # each notification carries bob's whole unread count, over both conversations
        assert eventually(lambda: badges_sent(provider, bob, with_carol) == [4], timeout=30)
        assert badges_sent(provider, bob, with_alice) == [1, 2, 3]
        assert badges.total(bob) == 4

        # bob reads alice's conversation (on a web socket, so he is still notified on the phone)
        token = mint_token(bob, WEB)
        body = {"userID": bob, "conversationID": with_alice, "hasReadSeq": 3}
        assert rest(stack.gateway_port, "/msg/mark_conversation_as_read", body, token)["errCode"] == 0
        assert badges.total(bob) == 1
        a.send_text(bob, "one more")
        assert eventually(lambda: badges_sent(provider, bob, with_alice) == [1, 2, 3, 2], timeout=30)

        # the app sets its own count; notifications count on from it
        set_badge = {"userID": bob, "appUnreadCount": 10}

        def badge_call(body: dict[str, Any]) -> int:
            return int(rest(stack.gateway_port, "/third/set_app_badge", body, token)["errCode"])

        assert badge_call(set_badge) == 0
        assert badge_call({**set_badge, "userID": alice}) == 1002
        assert badge_call({**set_badge, "appUnreadCount": -1}) == 1001
        c.send_text(bob, "after the app's count")
        assert eventually(lambda: badges_sent(provider, bob, with_carol) == [4, 11], timeout=30)


def set_conversation_opt(stack: Any, user: str, conv: str, opt: int) -> dict[str, Any]:
    body = {"userIDs": [user], "conversation": {"conversationID": conv, "recvMsgOpt": {"value": opt}}}
    return rest(stack.gateway_port, "/conversation/set_conversations", body, mint_token(user, LINUX))


def test_conversation_receive_option_refuses_or_silences_single_chats(
    stack: Any, provider: FakeProvider, uid: str
) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(stack, alice) as a, connect(stack, bob, WEB) as b:
        first = a.send_text(bob, "hello")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(1, timeout=15)] == [first]
        assert eventually(lambda: offline_ids(provider, bob) == [first], timeout=30)

        # 1: bob does not receive alice's messages; the sender is told and nothing gets a seq
        assert set_conversation_opt(stack, bob, conv, recv_opts.NOT_RECEIVE)["errCode"] == 0
        with pytest.raises(ClientError) as refused:
            a.send_text(bob, "you will not see this")
        assert refused.value.code == 1001 and "not sent" in str(refused.value)
        assert b.pushed_msgs(1, timeout=1.0) == []
        assert a.newest_seqs()[conv] == 1

        # 2: received online, no notification
        assert set_conversation_opt(stack, bob, conv, recv_opts.RECEIVE_NOT_NOTIFY)["errCode"] == 0
        quiet = a.send_text(bob, "quietly")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(1, timeout=15)] == [quiet]

        # 0 again: notified at once (the gateway's cache of the option was dropped)
        assert set_conversation_opt(stack, bob, conv, recv_opts.RECEIVE)["errCode"] == 0
        loud = a.send_text(bob, "loudly")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(1, timeout=15)] == [loud]
        assert eventually(lambda: offline_ids(provider, bob) == [first, loud], timeout=30)
        assert a.newest_seqs()[conv] == 3


def test_global_receive_option_applies_to_every_single_chat(stack: Any, provider: FakeProvider, uid: str) -> None:
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    admin = admin_token(stack.gateway_port)
    users = [{"userID": u, "nickname": u} for u in (alice, bob, carol)]
    assert rest(stack.gateway_port, "/user/user_register", {"users": users}, admin)["errCode"] == 0
    own = mint_token(bob, WEB)

    def set_global(opt: object, token: str = own, user: str = bob) -> int:
        body = {"userID": user, "globalRecvMsgOpt": opt}
        return int(rest(stack.gateway_port, "/user/set_global_msg_recv_opt", body, token)["errCode"])

    assert set_global(7) == 1001
    assert set_global(1, user=alice) == 1002
    assert set_global(1, token=admin, user=f"ghost{uid}") == 1004
    with login(stack, alice) as a, login(stack, carol) as c, connect(stack, bob, WEB) as b:
        assert set_global(recv_opts.NOT_RECEIVE) == 0
        for sender in (a, c):
            with pytest.raises(ClientError) as refused:
                sender.send_text(bob, "refused")
            assert refused.value.code == 1001
        assert b.pushed_msgs(1, timeout=1.0) == []
        # bob's own messages still go out (and come back to his socket, as every sent message does)
        own_msg = b.send_text(alice, "I can still write")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(1, timeout=15)] == [own_msg]
        # the server's read receipt to bob is a notification: never refused by his option
        conv = single_conversation_id(alice, bob)
        read = {"userID": alice, "conversationID": conv, "hasReadSeq": 1}
        assert (
            rest(stack.gateway_port, "/msg/mark_conversation_as_read", read, mint_token(alice, LINUX))["errCode"] == 0
        )
        [receipt] = b.pushed_msgs(1, timeout=15)
        assert int(receipt["contentType"]) == 2200

        assert set_global(recv_opts.RECEIVE_NOT_NOTIFY) == 0
        quiet = c.send_text(bob, "no notification")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(1, timeout=15)] == [quiet]
        assert set_global(recv_opts.RECEIVE) == 0
        loud = a.send_text(bob, "notified")["clientMsgID"]
        assert eventually(lambda: loud in offline_ids(provider, bob), timeout=30)
        time.sleep(0.5)
        assert quiet not in offline_ids(provider, bob)
        info = rest(stack.gateway_port, "/user/get_users_info", {"userIDs": [bob]}, own)
        assert info["data"]["usersInfo"][0]["globalRecvMsgOpt"] == 0

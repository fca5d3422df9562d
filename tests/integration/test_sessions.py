"""Sessions across two real gateway nodes: kicks, force logout, online subscriptions, logout,
background, server pings and the read deadline, and the per-connection rate limit."""

from __future__ import annotations

import json
import queue
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
import websocket

from app.cli.client import ClientError, ImClient, connect_url
from app.core import protocol
from app.core.constants import ANDROID, IOS, LINUX, WEB
from app.services.auth import mint_token
from tests.integration.helpers import eventually, login

RATE = 20


@pytest.fixture(scope="module")
def nodes(gateways: Callable[..., Any]) -> tuple[Any, Any]:
    """Node A pings fast, has a short read deadline and a low rate limit; node B runs the defaults."""
    node_a = gateways(
        "gateway-a",
        {
            "GATEWAY_PING_SECONDS": "0.5",
            "GATEWAY_READ_DEADLINE_SECONDS": "2.5",
            "GATEWAY_RATE_LIMIT": str(RATE),
            "GATEWAY_RATE_BURST": str(RATE),
        },
    )
    return node_a, gateways("gateway-b")


def connect(node: Any, user: str, platform: int, token: str | None = None) -> ImClient:
    return ImClient(node.ws_url, user, platform, token or mint_token(user, platform))


def refusal(node: Any, user: str, platform: int, token: str) -> dict[str, Any]:
    ws = websocket.create_connection(connect_url(node.ws_url, user, platform, token), timeout=10)
    try:
        body: dict[str, Any] = json.loads(ws.recv())
        return body
    finally:
        ws.close()


def test_newer_login_on_another_node_kicks_the_older_one(stack: Any, nodes: tuple[Any, Any], uid: str) -> None:
    node_a, node_b = nodes
    user = f"k{uid}"
    old_token, new_token = mint_token(user, IOS, ttl_seconds=3600), mint_token(user, IOS)
    with connect(node_a, user, IOS, old_token) as old, connect(node_b, user, ANDROID) as phone_b:
        assert old.newest_seqs() == {}
        new = connect(node_b, user, IOS, new_token)
        kicked = old.next_notice(protocol.KICK_ONLINE_MSG, timeout=10)
        assert kicked["errCode"] == 0
        assert old.closed.wait(10), "the kicked socket must be closed"
        # the newer login and the user's other platform are untouched (policy 1: same platform only)
        assert new.newest_seqs() == {}
        assert phone_b.newest_seqs() == {}
        with pytest.raises(queue.Empty):
            phone_b.next_notice(protocol.KICK_ONLINE_MSG, timeout=0.5)
        # the kicked token cannot come back; a fresh one can
        assert refusal(node_a, user, IOS, old_token)["errCode"] == 1506
        new.close()


def test_same_token_reconnecting_replaces_the_old_socket_without_a_kick(nodes: tuple[Any, Any], uid: str) -> None:
    node_a, node_b = nodes
    user = f"r{uid}"
    token = mint_token(user, LINUX)
    with connect(node_a, user, LINUX, token) as first:
        assert first.newest_seqs() == {}
        with connect(node_b, user, LINUX, token) as second:
            assert first.closed.wait(10)
            with pytest.raises(queue.Empty):
                first.next_notice(protocol.KICK_ONLINE_MSG, timeout=0.2)
            assert second.newest_seqs() == {}


def test_force_logout_closes_the_login_on_its_node_and_voids_its_tokens(
    stack: Any, nodes: tuple[Any, Any], uid: str
) -> None:
    _, node_b = nodes
    user = f"f{uid}"
    token = mint_token(user, WEB)
    with connect(node_b, user, WEB, token) as client:
        admin = requests.post(
            f"http://127.0.0.1:{stack.gateway_port}/auth/get_admin_token",
            json={"secret": "test-admin-secret-0123456789abcdef0123", "userID": "imAdmin"},
            timeout=10,
        ).json()["data"]["token"]
        refused = requests.post(
            f"http://127.0.0.1:{stack.gateway_port}/auth/force_logout",
            json={"userID": user, "platformID": WEB},
            timeout=10,
        ).json()
        assert refused["errCode"] in (1501, 1502, 1503), "force_logout needs an admin token"
        assert client.newest_seqs() == {}
        # the admin REST of the session's gateway reaches the login held by node B
        answer = requests.post(
            f"http://127.0.0.1:{stack.gateway_port}/auth/force_logout",
            json={"userID": user, "platformID": WEB},
            headers={"token": admin},
            timeout=10,
        ).json()
        assert answer["errCode"] == 0
        client.next_notice(protocol.KICK_ONLINE_MSG, timeout=10)
        assert client.closed.wait(10)
        assert refusal(node_b, user, WEB, token)["errCode"] == 1506


def test_online_status_subscription_sees_a_user_come_and_go(nodes: tuple[Any, Any], uid: str) -> None:
    node_a, node_b = nodes
    watcher_id, watched = f"w{uid}", f"x{uid}"
    with connect(node_a, watcher_id, LINUX) as watcher:
        assert watcher.subscribe_online([watched]) == {watched: []}
        phone = connect(node_b, watched, ANDROID)
        came = watcher.next_notice(protocol.SUB_USER_ONLINE_STATUS, timeout=10)
        assert came["data"]["subscribers"] == [{"userID": watched, "onlinePlatformIDs": [ANDROID]}]
        web = connect(node_a, watched, WEB)
        # the web login's notice; a repeat of the phone's state may come first (node b renewing it)
        seen: list[list[int]] = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and seen[-1:] != [[ANDROID, WEB]]:
            notice = watcher.next_notice(protocol.SUB_USER_ONLINE_STATUS, timeout=10)
            seen.append(notice["data"]["subscribers"][0]["onlinePlatformIDs"])
        assert seen[-1] == [ANDROID, WEB], seen
        assert all(platforms in ([ANDROID], [ANDROID, WEB]) for platforms in seen), seen
        assert watcher.subscribe_online([watched]) == {watched: [ANDROID, WEB]}
        phone.close()
        web.close()
        last = None
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            last = watcher.next_notice(protocol.SUB_USER_ONLINE_STATUS, timeout=10)
            if not last["data"]["subscribers"][0].get("onlinePlatformIDs"):
                break
        assert last is not None
        assert [(e["userID"], e.get("onlinePlatformIDs", [])) for e in last["data"]["subscribers"]] == [(watched, [])]
        # unsubscribed: the user coming back is not reported (an earlier change may still be in flight)
        watcher.subscribe_online([], unsubscribe=[watched])
        again = connect(node_b, watched, ANDROID)
        assert again.newest_seqs() == {}
        time.sleep(1.0)
        late = []
        while not watcher.notices.empty():
            late.extend(watcher.notices.get()["data"]["subscribers"])
        assert all(not e.get("onlinePlatformIDs") for e in late), late
        again.close()


def test_logout_answers_then_closes(nodes: tuple[Any, Any], uid: str) -> None:
    _, node_b = nodes
    with connect(node_b, f"l{uid}", LINUX) as client:
        assert client.logout() == {}
        assert client.closed.wait(10)


def test_ios_in_background_gets_offline_push_instead(stack: Any, provider: Any, uid: str) -> None:
    sender_id, phone_id = f"s{uid}", f"p{uid}"
    with login(stack, sender_id) as sender, ImClient(stack.ws_url, phone_id, IOS, mint_token(phone_id, IOS)) as phone:
        assert phone.set_background(True) == {}
        sender.send_text(phone_id, "while you were away")
        got = provider.wait_for_user(phone_id, 1)
        assert [m["clientMsgID"] for r in got for m in r["msgs"]], "background iOS goes to offline push"
        assert phone.pushed_msgs(1, timeout=1.0) == []
        phone.set_background(False)
        sender.send_text(phone_id, "welcome back")
        pushed = phone.pushed_msgs(1, timeout=15)
        assert len(pushed) == 1
        assert len(provider.for_user(phone_id)) == len(got), "foreground iOS is not offline-pushed"


def test_quiet_reader_is_kept_and_a_socket_that_never_answers_pings_is_dropped(
    stack: Any, nodes: tuple[Any, Any], uid: str
) -> None:
    node_a, _ = nodes
    reader = connect(node_a, f"q{uid}", LINUX)  # its reader thread answers pings
    dead = websocket.create_connection(
        connect_url(node_a.ws_url, f"d{uid}", LINUX, mint_token(f"d{uid}", LINUX)), timeout=10
    )
    try:
        time.sleep(5)  # twice node A's read deadline, without a frame from either client
        assert reader.newest_seqs() == {}
        closed = False
        dead.settimeout(5)
        try:
            for _ in range(50):
                opcode, _ = dead.recv_data(control_frame=True)
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    closed = True
                    break
        except (websocket.WebSocketException, OSError):
            closed = True
        assert closed, "a socket that answers no ping must be closed at the read deadline"
        assert "silent past the read deadline" in stack.log_text("gateway-a")
    finally:
        reader.close()
        dead.close()


def test_a_flood_is_refused_with_an_error_and_other_connections_are_unharmed(
    stack: Any, nodes: tuple[Any, Any], uid: str
) -> None:
    node_a, _ = nodes
    flooder = websocket.create_connection(
        connect_url(node_a.ws_url, f"fl{uid}", LINUX, mint_token(f"fl{uid}", LINUX)), timeout=10
    )
    neighbour = connect(node_a, f"nb{uid}", LINUX)
    try:
        frames = 200
        for i in range(frames):
            envelope = {"reqIdentifier": 1001, "sendID": f"fl{uid}", "msgIncr": str(i), "data": {}}
            flooder.send_binary(json.dumps(envelope).encode())
        answers = [json.loads(flooder.recv()) for _ in range(frames)]
        assert sorted(int(a["msgIncr"]) for a in answers) == list(range(frames)), "every frame is answered"
        codes = [a["errCode"] for a in answers]
        assert RATE <= codes.count(0) < frames / 2
        assert codes.count(1610) == frames - codes.count(0)
        assert neighbour.newest_seqs() == {}
        # the bucket refills: the flooder is served again, and the flood was logged once, its end once
        time.sleep(1.5)
        flooder.send_binary(json.dumps({"reqIdentifier": 1001, "sendID": f"fl{uid}", "msgIncr": "x"}).encode())
        assert json.loads(flooder.recv())["errCode"] == 0
        log = stack.log_text("gateway-a")
        floods = log.count(f"fl{uid}/{LINUX} is over {RATE} requests/s")
        assert floods == log.count(f"fl{uid}/{LINUX} is under the request rate limit again") >= 1
        # Once per flood, not per refused frame: a second flood within these 200 frames needs a frame
        # served between, which only a token refilled while the gateway read them gives (a slow machine
        # read them over more than 1/RATE s): at most one per frame served beyond the burst.
        assert floods <= codes.count(0) - RATE + 1
    finally:
        flooder.close()
        neighbour.close()


def test_healthz_counts_connections(nodes: tuple[Any, Any], uid: str) -> None:
    _, node_b = nodes
    before = requests.get(f"{node_b.http_url}/healthz", timeout=5).json()["connections"]
    with connect(node_b, f"h{uid}", LINUX) as client:
        assert client.newest_seqs() == {}  # answered: registered
        assert requests.get(f"{node_b.http_url}/healthz", timeout=5).json()["connections"] == before + 1
    assert eventually(lambda: requests.get(f"{node_b.http_url}/healthz", timeout=5).json()["connections"] == before)


def test_kicked_client_cannot_send(nodes: tuple[Any, Any], uid: str) -> None:
    node_a, node_b = nodes
    user = f"ks{uid}"
    old = connect(node_a, user, LINUX, mint_token(user, LINUX, ttl_seconds=7200))
    assert old.newest_seqs() == {}  # answered: the login is registered before the next one arrives
    new = connect(node_b, user, LINUX)
    try:
        old.next_notice(protocol.KICK_ONLINE_MSG, timeout=10)
        assert old.closed.wait(10)
        with pytest.raises((ClientError, TimeoutError, websocket.WebSocketException, OSError)):
            old.send_text(f"peer{uid}", "after the kick")
    finally:
        old.close()
        new.close()

"""OpenIM's core SDK (openim-sdk-core v3.8.3, as @openim/wasm-client-sdk 3.8.5, pinned in package.json)
chats through our stack in headless Chromium.

openim-sdk-core is the core of every official OpenIM app; its web build runs it as WebAssembly. Three
users, each in a browser context of its own, driven by playwright-core (tests/interop/wasm_scenario.mjs)
in Debian's chromium (installed by scripts/install_chromium.sh when missing). The page and the
package's assets are served here (tests/interop/static_server.py). The SDK speaks gob over gzip to
the stack's gateway and calls our REST API from the page's origin (CORS).

A and B: 20 messages each way; A logs out, B sends 5, A logs in again and its history has all 45 in
order. Then a group of the three created over REST; everyone sends to it; the gateway is killed and
started again mid-chat; the SDKs reconnect and every history is whole. Every REST answer the SDK got
was a success, no text frame but the connection's answer reached it, and the browser logged no page
error.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from app.core.constants import GROUP_CREATED, LINUX, WEB
from app.core.conversation import single_conversation_id
from tests.integration.helpers import eventually
from tests.interop.static_server import AssetServer
from tests.interop.test_openim_js_sdk import HERE, NODE, NPM, api, restart_stack_gateway, run_scenario
from tests.stack import ROOT, Stack

CHROMIUM = Path("/usr/bin/chromium")
SCENARIO_TIMEOUT = 420
PINNED = {"@openim/wasm-client-sdk": "3.8.5", "playwright-core": "1.65.1"}


@pytest.fixture(scope="module")
def chromium() -> Path:
    """Debian's chromium, installed when missing (scripts/install_chromium.sh: apt-get, as root)."""
    if not CHROMIUM.exists():
        subprocess.run(["bash", str(ROOT / "scripts" / "install_chromium.sh")], check=True, timeout=900)
    assert CHROMIUM.exists()
    return CHROMIUM


@pytest.fixture(scope="module")
def wasm_sdk_installed() -> Path:
    """tests/interop/node_modules from package-lock.json (npm ci) unless the pinned packages are there."""
    assert NODE is not None and NPM is not None, "the core SDK interop test needs Node.js and npm"
    modules = HERE / "node_modules"

    def installed(name: str) -> str | None:
        manifest = modules / name / "package.json"
        return json.loads(manifest.read_text())["version"] if manifest.exists() else None

    if any(installed(name) != version for name, version in PINNED.items()):
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=600)
    assert {name: installed(name) for name in PINNED} == PINNED
    return modules


@pytest.mark.timeout(SCENARIO_TIMEOUT + 900)  # a first Chromium install (apt-get) and npm ci included
def test_core_sdk_single_chat_relogin_group_and_gateway_restart(
    chromium: Path, wasm_sdk_installed: Path, stack: Stack, uid: str
) -> None:
    users = {label: f"{label.lower()}w{uid}" for label in "ABC"}
    nick = {user: f"{label} {uid}" for label, user in users.items()}
    group_id = f"gw{uid}"
    port = stack.gateway_port
    admin = api(port, "/auth/get_admin_token", {"secret": stack.env["ADMIN_SECRET"], "userID": "imAdmin"})["token"]
    api(port, "/user/user_register", {"users": [{"userID": u, "nickname": n} for u, n in nick.items()]}, admin)
    token = {u: api(port, "/auth/get_user_token", {"platformID": WEB, "userID": u}, admin)["token"] for u in nick}
    # a logout revokes its token: A's second login uses another
    second = api(port, "/auth/get_user_token", {"platformID": WEB, "userID": users["A"]}, admin)["token"]
    assert second != token[users["A"]]

    def create_group(_: dict[str, Any]) -> None:
        body = {
            "ownerUserID": users["A"],
            "memberUserIDs": [users["B"], users["C"]],
            "groupInfo": {"groupID": group_id, "groupName": f"Group {uid}"},
        }
        api(port, "/group/create_group", body, admin)

    def restart_gateway(_: dict[str, Any]) -> None:
        stack.kill("gateway")
        restart_stack_gateway(stack)

    on_await: dict[str, Callable[[dict[str, Any]], None]] = {
        "create-group": create_group,
        "restart-gateway": restart_gateway,
    }
    with AssetServer(wasm_sdk_installed, stack.log_dir / f"wasm-assets-{uid}.log") as assets:
        env = {
            "OPENIM_PAGE": assets.url,
            "OPENIM_API": f"http://127.0.0.1:{port}",
            "OPENIM_WS": stack.ws_url,
            "OPENIM_GROUP_ID": group_id,
            "OPENIM_CHROMIUM": str(chromium),
            "OPENIM_PLATFORM": str(WEB),
            **{f"OPENIM_{label}_USER": user for label, user in users.items()},
            **{f"OPENIM_{label}_TOKEN": token[user] for label, user in users.items()},
            "OPENIM_A_TOKEN2": second,
        }
        log_path = stack.log_dir / f"wasm-scenario-{uid}.log"
        events = run_scenario(env, on_await, log_path, script="wasm_scenario.mjs", timeout=SCENARIO_TIMEOUT)

    # while the gateway is down, the SDKs' reconnects fail (refused, reset): nothing else may
    restart = events.index({"ev": "await", "step": "restart-gateway"})
    problems = [
        e
        for i, e in enumerate(events)
        if e["ev"] in ("error", "rest-error", "ws-error", "page-error")
        and not (i > restart and e["ev"] == "ws-error" and "net::ERR_CONNECTION_RE" in e["error"])
    ]
    assert not problems, f"{problems} (browser console: {log_path})"
    assert events[-1] == {"ev": "done", "ok": True}
    assert [e["step"] for e in events if e["ev"] == "await"] == ["create-group", "restart-gateway"]
    check_connections(events)
    check_single_chat(events, users, nick)
    check_group_chat(events, users, nick, group_id)
    check_server_agrees(stack, admin, users, group_id)


def sdk_events(events: list[dict[str, Any]], user: str) -> list[str]:
    return [e["name"] for e in events if e["ev"] == "sdk-event" and e["user"] == user]


def check_connections(events: list[dict[str, Any]]) -> None:
    # A: login, login again, reconnect; B and C: login, reconnect. Each login synced (a reconnect
    # syncs only when the SDK decides it must); nobody was kicked or told its token is bad;
    # connecting failed only while the gateway was down
    restart = events.index({"ev": "await", "step": "restart-gateway"})
    for user, logins in (("A", 2), ("B", 1), ("C", 1)):
        names = sdk_events(events, user)
        assert names.count("OnConnectSuccess") == logins + 1, (user, names)
        assert names.count("OnSyncServerFinish") >= logins, (user, names)
        bad = {"OnSyncServerFailed", "OnKickedOffline", "OnUserTokenInvalid", "OnUserTokenExpired"}
        assert not bad & set(names), (user, names)
        failed = [i for i, e in enumerate(events) if e.get("name") == "OnConnectFailed" and e["user"] == user]
        assert all(i > restart for i in failed), (user, names)
    # no text frame but the connection's answer (index 0 of each socket) or a pong: any other ends
    # the core SDK's reader
    texts = [e for e in events if e["ev"] == "ws-text"]
    assert texts, "the connection's answer is a text frame"
    for frame in texts:
        if frame["index"] == 0:
            assert json.loads(frame["text"])["errCode"] == 0, frame
        else:
            assert json.loads(frame["text"]) == {"type": "pong"}, frame


# the single chat in seq order: a1, b1, a2, b2, ... a20, b20, then b21..b25 while A is away, and
# b-last after the gateway restart
SINGLE = [(who, f"{who.lower()}{i}") for i in range(1, 21) for who in "AB"] + [("B", f"b{i}") for i in range(21, 26)]


def history(events: list[dict[str, Any]], user: str, label: str, conversation_id: str) -> list[dict[str, Any]]:
    [page] = [
        e
        for e in events
        if e["ev"] == "history" and e["user"] == user and e["label"] == label and e["conversationID"] == conversation_id
    ]
    assert page["isEnd"]
    return list(page["msgs"])


def check_single_chat(events: list[dict[str, Any]], users: dict[str, str], nick: dict[str, str]) -> None:
    conv = single_conversation_id(users["A"], users["B"])
    sent = [e for e in events if e["ev"] == "sent" and not e["msg"]["groupID"]]
    assert [(e["user"], e["msg"]["text"]) for e in sent] == [*SINGLE, ("B", "b-last")]
    assert all(e["msg"]["status"] == 2 and e["msg"]["serverMsgID"] for e in sent)
    cid = {e["msg"]["text"]: e["msg"]["clientMsgID"] for e in sent}
    assert len(set(cid.values())) == len(sent)
    seq_of = {text: seq for seq, (_, text) in enumerate([*SINGLE, ("B", "b-last")], start=1)}

    # live: each side got the other's 20 in order, with their seqs, once (none of its own)
    for user, peer in (("A", "B"), ("B", "A")):
        got = [m for e in events if e["ev"] == "recv" and e["user"] == user for m in e["msgs"] if not m["groupID"]]
        first = [m for m in got if m["text"] in {t for w, t in SINGLE[:40] if w == peer}]
        want = [text for who, text in SINGLE[:40] if who == peer]
        assert [m["text"] for m in first] == want, (user, got)
        assert [m["seq"] for m in first] == [seq_of[t] for t in want]
        assert [m["clientMsgID"] for m in first] == [cid[t] for t in want]
        assert all(m["sendID"] == users[peer] and m["recvID"] == users[user] for m in first)
        assert all(m["senderNickname"] == nick[users[peer]] for m in first)
        assert not [m for m in got if m["sendID"] == users[user]], "own messages come back only as sent"
        texts = [m["text"] for m in got]
        assert len(texts) == len(set(texts)), f"{user} got a message twice: {texts}"

    def check_history(msgs: list[dict[str, Any]], count: int) -> None:
        want = [*SINGLE, ("B", "b-last")][:count]
        assert [(m["seq"], m["text"], m["sendID"]) for m in msgs] == [
            (seq, text, users[who]) for seq, (who, text) in enumerate(want, start=1)
        ]
        assert [m["clientMsgID"] for m in msgs] == [cid[text] for _, text in want]
        assert all(m["status"] == 2 and m["contentType"] == 101 and m["sessionType"] == 1 for m in msgs)

    check_history(history(events, "A", "single-before-logout", conv), 40)
    # A logged out, B sent 5, A logged in again: all 45 in order
    check_history(history(events, "A", "single-after-relogin", conv), 45)
    check_history(history(events, "B", "single-after-relogin", conv), 45)
    check_history(history(events, "A", "single-end", conv), 46)
    check_history(history(events, "B", "single-end", conv), 46)


def group_sent(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["user"], e["msg"]["text"]) for e in events if e["ev"] == "sent" and e["msg"]["groupID"]]


def check_group_chat(events: list[dict[str, Any]], users: dict[str, str], nick: dict[str, str], group_id: str) -> None:
    rounds = [(who, f"g-{who.lower()}{r}") for r in range(1, 4) for who in "ABC"]
    back = [("A", f"g-a-back{i}") for i in range(1, 4)]
    last = [(who, f"g-{who.lower()}-last") for who in "BCA"]
    chat = rounds + back + last
    assert group_sent(events) == chat
    for user in "ABC":
        # (no OnJoinedGroupAdded: the creation message of the group's conversation comes first and
        # the SDK stores the group's info for it, so its sync finds the group known; see
        # docs/openim-sdk-core.md)
        assert not [e for e in events if e.get("name") == "OnJoinedGroupDeleted"]
        [listed] = [e for e in events if e["ev"] == "groups" and e["user"] == user]
        assert listed["groups"] == [group_id]
        assert listed["group"] == {
            "groupID": group_id,
            "groupName": f"Group {group_id[2:]}",
            "ownerUserID": users["A"],
            "memberCount": 3,
        }
        # the group's history: its creation notification (seq 1), then every message in order, once,
        # the ones sent while this user was reconnecting included
        msgs = history(events, user, "group", f"sg_{group_id}")
        assert msgs[0]["seq"] == 1 and msgs[0]["contentType"] == GROUP_CREATED
        assert [(m["seq"], m["text"], m["sendID"]) for m in msgs[1:]] == [
            (seq, text, users[who]) for seq, (who, text) in enumerate(chat, start=2)
        ]
        assert all(m["groupID"] == group_id and m["sessionType"] == 3 for m in msgs)
        assert all(m["senderNickname"] == nick[users[who]] for m, (who, _) in zip(msgs[1:], chat, strict=True))
        # live: other members' messages only, once each, in seq order, and all of those sent once
        # everyone was back (what came while this user was reconnecting is in its history above: the
        # SDK pulls only each conversation's newest message when it connects)
        recv = [m for e in events if e["ev"] == "recv" and e["user"] == user for m in e["msgs"]]
        got = [m for m in recv if m["groupID"] and m["text"]]
        seq_of = {text: seq for seq, (_, text) in enumerate(chat, start=2)}
        others = {text for who, text in chat if who != user}
        assert {m["text"] for m in got} <= others, (user, got)
        assert [m["seq"] for m in got] == sorted({seq_of[m["text"]] for m in got}), (user, got)
        assert [m["seq"] for m in got] == [seq_of[m["text"]] for m in got]
        assert {text for who, text in last if who != user} <= {m["text"] for m in got}, (user, got)


def check_server_agrees(stack: Stack, admin: str, users: dict[str, str], group_id: str) -> None:
    """Every message is in the store, as the histories said (pulled with our own client)."""
    from app.cli.client import ImClient, text_of
    from app.services import history as server_history

    conv = single_conversation_id(users["A"], users["B"])
    group_conv = f"sg_{group_id}"
    assert eventually(lambda: server_history.visible_max_seqs([conv, group_conv]) == {conv: 46, group_conv: 16})
    token = api(stack.gateway_port, "/auth/get_user_token", {"platformID": LINUX, "userID": users["B"]}, admin)
    client = ImClient(stack.ws_url, users["B"], LINUX, token["token"])
    try:
        pulled = client.pull_range(conv, 1, 46)["Msgs"]
        assert [text_of(m) for m in pulled] == [text for _, text in SINGLE] + ["b-last"]
        pulled = client.pull_range(group_conv, 1, 16)["Msgs"]
        assert [int(m["contentType"]) for m in pulled] == [GROUP_CREATED] + [101] * 15
    finally:
        client.close()

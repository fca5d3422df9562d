"""OpenIM's official JS SDK (@openim/client-sdk 0.0.14, pinned in package.json) chats through our stack.

Three SDK users under Node (tests/interop/scenario.mjs) on two gateway nodes: A on a second gateway
started here, B and C on the stack's. Tokens come from our admin REST, nicknames from
/user/user_register. A and B chat one to one, both ways; each one's gateway is killed and started
again while the other keeps sending, and the SDK's own reconnect pulls bring back what was missed;
then history and mark-as-read (with the peer's read receipt). Then A creates a group of the three
with the SDK's createGroup, everyone sends to it, both gateways restart again, history, mark as
read. Every message is checked: content, sender, seq order, no duplicates. Skipped only when
`node` is not installed.
"""

from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import websocket

from app.cli.client import ImClient, text_of
from app.core.constants import GROUP_CREATED, LINUX, WEB
from app.core.conversation import single_conversation_id
from tests.integration.helpers import eventually
from tests.stack import ROOT, Stack

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
NPM = shutil.which("npm")
SCENARIO_TIMEOUT = 300

needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed: the JS SDK interop test needs Node.js")


@pytest.fixture(scope="module")
def sdk_installed() -> Path:
    """tests/interop/node_modules from package-lock.json (npm ci) unless it is there already."""
    installed = HERE / "node_modules" / "@openim" / "client-sdk" / "package.json"
    if not installed.exists() or not (HERE / "node_modules" / "ws" / "package.json").exists():
        assert NPM is not None, "node is installed but npm is not"
        subprocess.run([NPM, "ci", "--no-audit", "--no-fund"], cwd=HERE, check=True, timeout=600)
    assert json.loads(installed.read_text())["version"] == "0.0.14"
    return HERE / "node_modules"


class Gateway:
    """One gateway process with its own port and node id, sharing the stack's Redis, MongoDB and broker."""

    def __init__(self, stack: Stack, name: str) -> None:
        from app.ops import embedded

        self.port = embedded.free_port()
        self.log_path = stack.log_dir / f"{name}.log"
        self.env = {**stack.env, "GATEWAY_PORT": str(self.port), "GATEWAY_NODE_ID": f"gw-{name}-{uuid.uuid4().hex[:6]}"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "app", "gateway"], cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_healthy(self.port, self.proc)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def wait_healthy(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"gateway on {port} exited with {proc.returncode}"
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise AssertionError(f"gateway on {port} did not answer")


def restart_stack_gateway(stack: Stack) -> None:
    stack.start_process("gateway", ["gateway"])
    wait_healthy(stack.gateway_port, stack.procs["gateway"])


@pytest.fixture
def second_gateway(stack: Stack) -> Iterator[Gateway]:
    gateway = Gateway(stack, "gateway-interop")
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.kill()
        if stack.procs["gateway"].poll() is not None:  # the scenario failed with the stack's gateway down
            restart_stack_gateway(stack)


def api(port: int, path: str, body: dict[str, Any], token: str = "") -> Any:
    headers = {"operationID": uuid.uuid4().hex, **({"token": token} if token else {})}
    answer = requests.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers, timeout=10)
    assert answer.status_code == 200
    envelope = answer.json()
    assert envelope["errCode"] == 0, envelope
    return envelope["data"]


def run_scenario(
    env: dict[str, str],
    on_await: dict[str, Callable[[dict[str, Any]], None]],
    log_path: Path,
    script: str = "scenario.mjs",
    timeout: float = SCENARIO_TIMEOUT,
) -> list[dict[str, Any]]:
    """Run a Node scenario (scenario.mjs unless told); answer its `await` steps with the matching
    callables; return its events."""
    assert NODE is not None
    with open(log_path, "wb") as stderr, open(log_path.with_suffix(".jsonl"), "w") as trace:
        proc = subprocess.Popen(
            [NODE, str(HERE / script)],
            cwd=HERE,
            env={**os.environ, **env},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        lines: queue.Queue[str | None] = queue.Queue()

        def read(stream: Any) -> None:
            for line in stream:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=read, args=(proc.stdout,), daemon=True).start()
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
                if line is None:
                    break
                event = json.loads(line)
                events.append(event)
                trace.write(line)
                trace.flush()
                if event["ev"] == "await":
                    on_await[event["step"]](event)
                    proc.stdin.write(f"ok {event['step']}\n")
                    proc.stdin.flush()
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=10)
    return events


@needs_node
def test_js_sdk_single_and_group_chat_reconnect_history_and_read(
    sdk_installed: Path, stack: Stack, second_gateway: Gateway, uid: str
) -> None:
    run_js_sdk_scenario(stack, second_gateway, uid)


def run_js_sdk_scenario(stack: Stack, gw_a: Gateway, uid: str) -> None:
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    nick = {alice: f"Alice {uid}", bob: f"Bob {uid}", carol: f"Carol {uid}"}
    group_name = f"Group {uid}"
    admin = api(stack.gateway_port, "/auth/get_admin_token", {"secret": stack.env["ADMIN_SECRET"], "userID": "imAdmin"})
    api(
        stack.gateway_port,
        "/user/user_register",
        {"users": [{"userID": u, "nickname": n, "faceURL": ""} for u, n in nick.items()]},
        admin["token"],
    )
    token = {
        u: api(stack.gateway_port, "/auth/get_user_token", {"platformID": WEB, "userID": u}, admin["token"])["token"]
        for u in nick
    }
    stack_api = f"http://127.0.0.1:{stack.gateway_port}"
    env = {
        "OPENIM_A_USER": alice,
        "OPENIM_A_TOKEN": token[alice],
        "OPENIM_A_WS": f"ws://127.0.0.1:{gw_a.port}",
        "OPENIM_A_API": f"http://127.0.0.1:{gw_a.port}",
        "OPENIM_B_USER": bob,
        "OPENIM_B_TOKEN": token[bob],
        "OPENIM_B_WS": stack.ws_url,
        "OPENIM_B_API": stack_api,
        "OPENIM_C_USER": carol,
        "OPENIM_C_TOKEN": token[carol],
        "OPENIM_C_WS": stack.ws_url,
        "OPENIM_C_API": stack_api,
        "OPENIM_GROUP_NAME": group_name,
        "OPENIM_PLATFORM": str(WEB),
    }

    def committed(event: dict[str, Any]) -> None:
        from app.services import history

        wanted = event["conversationID"]
        assert eventually(lambda: history.visible_max_seqs([wanted])[wanted] == event["wantMaxSeq"])

    def start_a(event: dict[str, Any]) -> None:
        committed(event)
        gw_a.start()

    def start_b(event: dict[str, Any]) -> None:
        committed(event)
        restart_stack_gateway(stack)

    on_await: dict[str, Callable[[dict[str, Any]], None]] = {
        "stop-A": lambda _: gw_a.kill(),
        "start-A": start_a,
        "stop-B": lambda _: stack.kill("gateway"),
        "start-B": start_b,
    }
    events = run_scenario(env, on_await, stack.log_dir / f"scenario-{uid}.log")

    errors = [e for e in events if e["ev"] == "error"]
    assert not errors, errors
    assert events[-1] == {"ev": "done", "ok": True}
    assert [e["step"] for e in events if e["ev"] == "await"] == ["stop-B", "start-B", "stop-A", "start-A"] * 2

    # connection and sync: one sync at login and one after each reconnect (C shares B's gateway),
    # never a failed one
    for user in "ABC":
        names = [e["name"] for e in events if e["ev"] == "sdk-event" and e["user"] == user]
        assert names.count("OnSyncServerFinish") == 3, (user, names)
        assert names.count("OnConnectSuccess") == 3, (user, names)
        assert not {"OnSyncServerFailed", "OnKickedOffline", "OnUserTokenInvalid", "OnUserTokenExpired"} & set(names)

    user_id = {"A": alice, "B": bob, "C": carol}
    check_single_chat(events, user_id, nick)
    check_group_chat(events, user_id, nick, group_name)

    # the server agrees: everything read, every message pullable
    conv = single_conversation_id(alice, bob)
    [group_id] = [e["group"]["groupID"] for e in events if e["ev"] == "group-created"]
    group_conv = f"sg_{group_id}"
    for user in (alice, bob, carol):
        client = ImClient(stack.ws_url, user, LINUX, token_for(stack, admin["token"], user))
        try:
            if user != carol:
                read = client.read_state([conv])[conv]
                assert (read["maxSeq"], read["hasReadSeq"]) == (13, 13)
                pulled = client.pull_range(conv, 1, 13)["Msgs"]
                assert [text_of(m) for m in pulled] == [text for _, text in SINGLE_CHAT]
            read = client.read_state([group_conv])[group_conv]
            assert (read["maxSeq"], read["hasReadSeq"]) == (12, 12)  # C's own g-c3 is the last
            pulled = client.pull_range(group_conv, 1, 12)["Msgs"]
            assert [int(m["contentType"]) for m in pulled] == [GROUP_CREATED] + [101] * 11
            assert [text_of(m) for m in pulled[1:]] == [text for _, text in GROUP_CHAT[1:]]
        finally:
            client.close()


# every message of the single chat (user, text), in seq order
SINGLE_CHAT = [
    ("A", "a1"),
    ("B", "b1"),
    ("A", "a2"),
    ("B", "b2"),
    ("A", "a3"),
    ("A", "a4"),
    ("A", "a5"),
    ("B", "b3"),
    ("B", "b4"),
    ("A", "a6"),
    ("B", "b5"),
    ("A", "a7"),
    ("B", "b6"),
]
# and of the group conversation: A's createGroup made its creation notification the first
GROUP_CHAT = [
    ("A", None),
    ("A", "g-a1"),
    ("B", "g-b1"),
    ("C", "g-c1"),
    ("A", "g-a2"),
    ("A", "g-a3"),
    ("A", "g-a4"),
    ("B", "g-b2"),
    ("C", "g-c2"),
    ("A", "g-a5"),
    ("B", "g-b3"),
    ("C", "g-c3"),
]


def received(events: list[dict[str, Any]], user: str, group_id: str = "") -> list[dict[str, Any]]:
    """What `user`'s OnRecvNewMessages gave, in order: of the single chat, or of the group."""
    msgs = [m for e in events if e["ev"] == "recv" and e["user"] == user for m in e["msgs"]]
    return [m for m in msgs if m["groupID"] == group_id and (group_id or m["sessionType"] == 1)]


def history_of(events: list[dict[str, Any]], user: str, conversation_id: str) -> list[dict[str, Any]]:
    """`user`'s history pages of the conversation, 4 a page from the newest: oldest first, once."""
    pages = [e for e in events if e["ev"] == "history" and e["user"] == user and e["conversationID"] == conversation_id]
    assert pages[-1]["isEnd"] and not any(p["isEnd"] for p in pages[:-1])
    return [m for page in reversed(pages) for m in page["msgs"]]


def check_single_chat(events: list[dict[str, Any]], user_id: dict[str, str], nick: dict[str, str]) -> None:
    alice, bob = user_id["A"], user_id["B"]
    conv = single_conversation_id(alice, bob)
    sent = [e for e in events if e["ev"] == "sent" and not e["msg"]["groupID"]]
    assert [(e["user"], e["msg"]["text"]) for e in sent] == SINGLE_CHAT
    assert all(e["msg"]["sendID"] == user_id[e["user"]] and e["msg"]["serverMsgID"] for e in sent)
    cid = {e["msg"]["text"]: e["msg"]["clientMsgID"] for e in sent}
    assert len(set(cid.values())) == len(SINGLE_CHAT)
    seq_of = {text: seq for seq, (_, text) in enumerate(SINGLE_CHAT, start=1)}

    assert received(events, "C") == []
    for user, peer in (("A", "B"), ("B", "A")):
        got = received(events, user)
        want = [text for who, text in SINGLE_CHAT if who == peer]
        # exactly the peer's messages, once each, in seq order: none of its own, no duplicate
        # after the reconnect (the gateway pushed each own message back to its sender)
        assert [m["text"] for m in got] == want, (user, got)
        assert [m["seq"] for m in got] == [seq_of[t] for t in want]
        assert [m["clientMsgID"] for m in got] == [cid[t] for t in want]
        assert all(m["sendID"] == user_id[peer] and m["recvID"] == user_id[user] for m in got)
        assert all(m["senderNickname"] == nick[user_id[peer]] for m in got)
        assert all(m["sessionType"] == 1 and m["contentType"] == 101 for m in got)

    # history, 4 a page from the newest: the whole conversation, in order, once
    for user in "AB":
        msgs = history_of(events, user, conv)
        assert [(m["seq"], m["text"], m["sendID"]) for m in msgs] == [
            (seq, text, user_id[who]) for seq, (who, text) in enumerate(SINGLE_CHAT[:11], start=1)
        ]
        assert [m["clientMsgID"] for m in msgs] == [cid[text] for _, text in SINGLE_CHAT[:11]]

    # history stopped at b5; then B reads after a7 and A after b6: each sees its unread count drop to
    # 0, and the other is told which of its messages were read
    states = {(e["user"], e["label"]): e for e in events if e["ev"] == "state"}
    for user, peer in (("A", bob), ("B", alice)):
        before, after = states[(user, "before-read")], states[(user, "after-read")]
        for seen in (before, after):
            assert seen["conversation"] | {"unreadCount": 0} == {
                "conversationID": conv,
                "conversationType": 1,
                "userID": peer,
                "groupID": "",
                "showName": nick[peer],
                "unreadCount": 0,
            }
        assert before["conversation"]["unreadCount"] > 0 and before["totalUnread"] > 0
        assert after["conversation"]["unreadCount"] == 0
        assert after["totalUnread"] == 0
    # one receipt each, and none for the group's reading
    receipts = {e["user"]: e["receipts"] for e in events if e["ev"] == "receipt"}
    assert set(receipts) == {"A", "B"}
    for user, reader, last in (("A", "B", "a7"), ("B", "A", "b6")):
        [receipt] = receipts[user]
        assert receipt["userID"] == user_id[reader]
        own = {cid[text] for who, text in SINGLE_CHAT if who == user}
        assert cid[last] in receipt["msgIDList"] and set(receipt["msgIDList"]) <= own, receipt


def check_group_chat(
    events: list[dict[str, Any]], user_id: dict[str, str], nick: dict[str, str], group_name: str
) -> None:
    alice = user_id["A"]
    [created] = [e["group"] for e in events if e["ev"] == "group-created"]
    group_id = created["groupID"]
    group_conv = f"sg_{group_id}"
    info = {
        "groupID": group_id,
        "groupName": group_name,
        "ownerUserID": alice,
        "creatorUserID": alice,
        "memberCount": 3,
        "status": 0,
    }
    assert created == info

    # everyone lists the group and opens its conversation, named after it
    states = {(e["user"], e["label"]): e for e in events if e["ev"] == "state"}
    for user in "ABC":
        [listed] = [e for e in events if e["ev"] == "groups" and e["user"] == user]
        assert listed["groups"] == [info] and listed["isJoinGroup"] is True
        assert states[(user, "group-joined")]["conversation"] | {"unreadCount": 0} == {
            "conversationID": group_conv,
            "conversationType": 3,
            "userID": "",
            "groupID": group_id,
            "showName": group_name,
            "unreadCount": 0,
        }
        [members] = [e["members"] for e in events if e["ev"] == "members" and e["user"] == user]
        assert sorted((m["userID"], m["nickname"], m["roleLevel"]) for m in members) == sorted(
            (u, nick[u], 100 if u == alice else 20) for u in user_id.values()
        )

    sent = [e for e in events if e["ev"] == "sent" and e["msg"]["groupID"]]
    assert [(e["user"], e["msg"]["text"]) for e in sent] == GROUP_CHAT[1:]
    assert all(e["msg"]["groupID"] == group_id and e["msg"]["sessionType"] == 3 for e in sent)
    cid = {e["msg"]["text"]: e["msg"]["clientMsgID"] for e in sent}
    assert len(set(cid.values())) == len(GROUP_CHAT) - 1

    for user in "ABC":
        got = received(events, user, group_id)
        # first the creation notification, shown as a message of the group's conversation (the
        # creator's too: it came from the createGroup call, not from a send of its own); then every
        # other member's message once, in seq order, none of its own, none again after a reconnect
        notification, chat = got[0], got[1:]
        assert {k: notification[k] for k in ("seq", "sendID", "sessionType", "contentType", "msgFrom")} == {
            "seq": 1,
            "sendID": alice,
            "sessionType": 3,
            "contentType": GROUP_CREATED,
            "msgFrom": 200,
        }
        tips = notification["tips"]
        assert (tips["group"]["groupID"], tips["group"]["groupName"], tips["opUser"]["userID"]) == (
            group_id,
            group_name,
            alice,
        )
        assert sorted(m["userID"] for m in tips["memberList"]) == sorted(user_id.values())
        want = [(seq, who, text) for seq, (who, text) in enumerate(GROUP_CHAT, start=1) if text and who != user]
        assert [(m["seq"], m["text"]) for m in chat] == [(seq, text) for seq, _, text in want], (user, got)
        assert [m["clientMsgID"] for m in chat] == [cid[text] for _, _, text in want]
        assert [(m["sendID"], m["senderNickname"]) for m in chat] == [
            (user_id[who], nick[user_id[who]]) for _, who, _ in want
        ]
        assert all(m["contentType"] == 101 and m["sessionType"] == 3 and m["recvID"] == "" for m in chat)

        # history, 4 a page from the newest: the notification and every message, in order, once
        msgs = history_of(events, user, group_conv)
        assert [(m["seq"], m["text"], m["sendID"]) for m in msgs] == [
            (seq, text, user_id[who]) for seq, (who, text) in enumerate(GROUP_CHAT[:11], start=1)
        ]
        assert [m["clientMsgID"] for m in msgs[1:]] == [cid[text] for _, text in GROUP_CHAT[1:11]]
        assert msgs[0]["contentType"] == GROUP_CREATED
        assert all(m["senderNickname"] == nick[m["sendID"]] for m in msgs)

        # the SDK added the group when the creation notification came (it is also pushed among the
        # notifications), once: the syncs after its reconnects found nothing new
        added = [i for i, e in enumerate(events) if e.get("name") == "OnJoinedGroupAdded" and e["user"] == user]
        assert [events[i]["groupID"] for i in added] == [group_id]
        assert added[0] < next(i for i, e in enumerate(events) if e["ev"] == "sent" and e["msg"]["groupID"])
        gone = {"OnJoinedGroupDeleted", "OnGroupMemberAdded", "OnGroupMemberDeleted"}
        assert not [e for e in events if e["ev"] == "sdk-event" and e["user"] == user and e["name"] in gone]

    # C writes last; A and B then read the group: unread counts drop to 0
    for user in "AB":
        before, after = states[(user, "group-before-read")], states[(user, "group-after-read")]
        assert before["conversation"]["conversationID"] == group_conv
        assert before["conversation"]["unreadCount"] > 0 and before["totalUnread"] > 0
        assert after["conversation"]["unreadCount"] == 0 and after["totalUnread"] == 0


def token_for(stack: Stack, admin_token: str, user: str) -> str:
    return str(
        api(stack.gateway_port, "/auth/get_user_token", {"platformID": LINUX, "userID": user}, admin_token)["token"]
    )


def test_own_message_comes_back_with_the_send_operation_id(stack: Stack, uid: str) -> None:
    """What the SDK relies on, without Node: the sending socket gets its message pushed back, with the
    SendMsg's operationID (other pushes carry theirs), in `msgs`; a REST read receipt reaches the
    peer as a system notification in `notificationMsgs`."""
    from app.services.auth import mint_token

    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    a = ImClient(stack.ws_url, alice, WEB, mint_token(alice, WEB))
    try:
        ws = websocket.create_connection(
            f"{stack.ws_url}/?sendID={bob}&token={mint_token(bob, WEB)}&platformID={WEB}&operationID=x&sdkType=json",
            timeout=10,
        )
        content = "eyJjb250ZW50IjoiaGkifQ=="  # {"content":"hi"}
        msg = {"recvID": alice, "clientMsgID": f"c{uid}", "sessionType": 1, "contentType": 101, "content": content}
        envelope = {"reqIdentifier": 1003, "sendID": bob, "operationID": f"op-{uid}", "msgIncr": "1", "data": msg}
        ws.send_binary(json.dumps(envelope).encode())
        frames = [json.loads(ws.recv()) for _ in range(2)]
        assert [(f["reqIdentifier"], f["operationID"]) for f in frames] == [(1003, f"op-{uid}"), (2001, f"op-{uid}")]
        [echo] = frames[1]["data"]["msgs"][conv]["Msgs"]
        assert (echo["clientMsgID"], int(echo["seq"])) == (f"c{uid}", 1)
        assert a.pushed_msgs(1)[0]["clientMsgID"] == f"c{uid}"

        admin = api(stack.gateway_port, "/auth/get_admin_token", {"secret": stack.env["ADMIN_SECRET"], "userID": "x"})
        alice_token = token_for(stack, admin["token"], alice)
        api(
            stack.gateway_port,
            "/msg/mark_conversation_as_read",
            {"conversationID": conv, "userID": alice, "hasReadSeq": 1, "seqs": [1]},
            alice_token,
        )
        push = json.loads(ws.recv())
        assert push["reqIdentifier"] == 2001 and not push["data"]["msgs"]
        [receipt] = push["data"]["notificationMsgs"][f"n_{min(alice, bob)}_{max(alice, bob)}"]["Msgs"]
        assert (int(receipt["contentType"]), int(receipt["msgFrom"]), int(receipt.get("seq", 0))) == (2200, 200, 0)
        tips = json.loads(json.loads(base64.b64decode(receipt["content"]))["detail"])
        assert tips == {"markAsReadUserID": alice, "conversationID": conv, "seqs": [1], "hasReadSeq": 1}
        assert a.read_state([conv])[conv]["hasReadSeq"] == 1
        ws.close()
    finally:
        a.close()

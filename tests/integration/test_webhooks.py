"""OpenIM's webhooks through the whole stack: an integrator's endpoint (imitated locally, recording
each call) that refuses, modifies, stalls or fails; the stack on a broker of its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from app.cli.client import ClientError, ImClient, text_of
from app.core.constants import ANDROID, LINUX, WEB
from app.core.conversation import single_conversation_id
from app.ops import embedded
from app.pipeline import dead_letters
from app.services.auth import mint_token
from tests.conftest import WORK_DIR
from tests.fake_providers import FakeProvider, FakeWebhooks, labelled_metric
from tests.integration.helpers import admin_token, eventually, login, rest
from tests.stack import Stack

TIMEOUT_SECONDS = 1
SEND_TIMEOUT_SECONDS = 4  # beforeSendSingleMsg's: room for other users' sends while one waits on it
ALL = [
    "beforeSendSingleMsg",
    "beforeSendGroupMsg",
    "beforeMsgModify",
    "afterSendSingleMsg",
    "afterSendGroupMsg",
    "afterMsgSaveDB",
    "beforeOnlinePush",
    "beforeGroupOnlinePush",
    "beforeOfflinePush",
    "afterUserOnline",
    "afterUserOffline",
    "afterRevokeMsg",
]


@pytest.fixture(scope="module")
def hooks() -> Iterator[FakeWebhooks]:
    with FakeWebhooks() as fake:
        fake.stall_seconds = 2 * SEND_TIMEOUT_SECONDS
        yield fake


@pytest.fixture(scope="module")
def notifier() -> Iterator[FakeProvider]:
    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def hooked(infra: dict[str, str], hooks: FakeWebhooks, notifier: FakeProvider) -> Iterator[Stack]:
    """OpenIM's webhooks.yml (every callback on, a 1 s timeout; a group send stops when its
    endpoint fails), on a broker of its own so the shared stack's workers never take these tasks."""
    port = embedded.free_port()
    broker = embedded.start_redis(port, WORK_DIR / "webhooks-broker", WORK_DIR / "webhooks-broker.log")
    config: dict[str, Any] = {"url": hooks.url}
    for name in ALL:
        config[name] = {"enable": True, "timeout": TIMEOUT_SECONDS, "failedContinue": True}
    config["beforeSendGroupMsg"]["failedContinue"] = False
    config["beforeSendSingleMsg"]["timeout"] = SEND_TIMEOUT_SECONDS
    path = WORK_DIR / "webhooks.yml"
    path.write_text(yaml.safe_dump(config))
    env = {
        **infra,
        "BROKER_URL": f"redis://127.0.0.1:{port}/0",
        "WEBHOOKS_CONFIG": str(path),
        "WEBHOOK_MAX_RETRIES": "2",
        "OFFLINE_PUSH_URL": notifier.url,
    }
    try:
        with Stack(WORK_DIR / "stack-webhooks", env) as stack:
            yield stack.start()
    finally:
        broker.terminate()
        broker.wait(timeout=10)


def answer_refusing(word: str, code: int) -> Any:
    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if word in body.get("content", ""):
            return {"actionCode": 0, "nextCode": 1, "errCode": code, "errMsg": f"no {word} here"}
        return {"actionCode": 0, "nextCode": 0}

    return answer


def calls_for(hooks: FakeWebhooks, command: str, client_msg_id: str) -> list[dict[str, Any]]:
    return [c for c in hooks.of(command) if c.get("clientMsgID") == client_msg_id]


def test_a_refused_send_is_answered_with_the_webhooks_code_and_never_stored(
    hooked: Stack, hooks: FakeWebhooks, uid: str
) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    hooks.answers["callbackBeforeSendSingleMsgCommand"] = answer_refusing("spam", 7001)
    with login(hooked, alice) as a, login(hooked, bob, WEB) as b:
        kept = a.send_text(bob, "hello")["clientMsgID"]
        with pytest.raises(ClientError) as refused:
            a.send_text(bob, "buy spam now", client_msg_id=f"spam-{uid}")
        assert (refused.value.code, refused.value.message) == (7001, "no spam here")
        after = a.send_text(bob, "sorry")["clientMsgID"]
        assert [m["clientMsgID"] for m in b.pushed_msgs(2, timeout=15)] == [kept, after]
        assert [int(m["seq"]) for m in b.pull_range(conv, 1, 10)["Msgs"]] == [1, 2]
    [call] = calls_for(hooks, "callbackBeforeSendSingleMsgCommand", f"spam-{uid}")
    assert (call["sendID"], call["recvID"], call["content"]) == (alice, bob, json.dumps({"content": "buy spam now"}))
    assert labelled_metric(
        hooked.gateway_port, "webhook_calls_total", callback="beforeSendSingleMsg", outcome="refused"
    )
    assert hooks.violations == []


def test_a_modified_message_is_what_gets_a_seq_pushed_and_stored(hooked: Stack, hooks: FakeWebhooks, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)

    def censor(body: dict[str, Any]) -> dict[str, Any]:
        if "darn" not in body["content"]:
            return {"actionCode": 0, "nextCode": 0}
        return {"actionCode": 0, "nextCode": 0, "content": body["content"].replace("darn", "****"), "ex": "censored"}

    hooks.answers["callbackBeforeMsgModifyCommand"] = censor
    with login(hooked, alice) as a, login(hooked, bob, WEB) as b:
        a.send_text(bob, "oh darn it")
        [pushed] = b.pushed_msgs(1, timeout=15)
        assert (text_of(pushed), pushed["ex"]) == ("oh **** it", "censored")
        [pulled] = b.pull_range(conv, 1, 1)["Msgs"]
        assert text_of(pulled) == "oh **** it"
        # content that is not JSON is refused, not stored
        hooks.answers["callbackBeforeMsgModifyCommand"] = lambda body: {"actionCode": 0, "content": "not json"}
        with pytest.raises(ClientError) as refused:
            a.send_text(bob, "anything")
        assert refused.value.code == 1001
        assert a.newest_seqs()[conv] == 1
    hooks.answers.pop("callbackBeforeMsgModifyCommand")
    saved = eventually(lambda: [c for c in hooks.of("callbackAfterMsgSaveDBCommand") if c["recvID"] == bob])
    assert [(c["content"], c["seq"]) for c in saved] == [(json.dumps({"content": "oh **** it"}), 1)]


def test_a_stalled_webhook_costs_its_timeout_and_no_one_elses_send(
    hooked: Stack, hooks: FakeWebhooks, uid: str
) -> None:
    slow, fast, peer = f"slow{uid}", f"fast{uid}", f"peer{uid}"
    hooks.stall_if = lambda command, body: command == "callbackBeforeSendSingleMsgCommand" and body["sendID"] == slow
    done: dict[str, float] = {}
    try:
        with login(hooked, slow) as s, login(hooked, fast) as f, login(hooked, peer, WEB) as p:

            def send_slow() -> None:
                s.send_text(peer, "through the stall")  # failedContinue: accepted after the timeout
                done["slow"] = time.monotonic()

            started = time.monotonic()
            thread = threading.Thread(target=send_slow)
            thread.start()
            assert eventually(lambda: any(c["sendID"] == slow for c in hooks.of("callbackBeforeSendSingleMsgCommand")))
            for i in range(5):
                f.send_text(peer, f"meanwhile {i}")
            done["fast"] = time.monotonic()
            thread.join(timeout=30)
            assert "slow" in done, "the stalled send was never answered"
            assert done["fast"] < done["slow"], "another user's sends waited for the stalled webhook"
            # bounded by the timeout, not by the stall
            assert done["slow"] - started < SEND_TIMEOUT_SECONDS + (hooks.stall_seconds - SEND_TIMEOUT_SECONDS) / 2
            texts = sorted(text_of(m) for m in p.pushed_msgs(6, timeout=15))
            assert texts == sorted(["through the stall", *(f"meanwhile {i}" for i in range(5))])
    finally:
        hooks.stall_if = lambda command, body: False
    assert labelled_metric(
        hooked.gateway_port, "webhook_calls_total", callback="beforeSendSingleMsg", outcome="skipped"
    )


def test_a_failing_endpoint_stops_a_group_send_when_failed_continue_is_false(
    hooked: Stack, hooks: FakeWebhooks, uid: str
) -> None:
    owner, member = f"own{uid}", f"mem{uid}"
    group_id = f"g{uid}"
    admin = admin_token(hooked.gateway_port)
    body = {"ownerUserID": owner, "memberUserIDs": [member], "groupInfo": {"groupID": group_id, "groupName": "g"}}
    assert rest(hooked.gateway_port, "/group/create_group", body, admin)["errCode"] == 0
    hooks.fail_if = lambda command, body: command == "callbackBeforeSendGroupMsgCommand"
    try:
        with login(hooked, owner) as o:
            with pytest.raises(ClientError) as stopped:
                o.send_group_text(group_id, "nobody hears this")
            assert stopped.value.code == 80000
            hooks.fail_if = lambda command, body: False
            assert o.send_group_text(group_id, "now it works")["clientMsgID"]
    finally:
        hooks.fail_if = lambda command, body: False

    def texts_after() -> list[str]:
        calls = hooks.of("callbackAfterSendGroupMsgCommand")
        return [c["content"] for c in calls if c["groupID"] == group_id and c["contentType"] == 101]

    assert eventually(lambda: texts_after() == [json.dumps({"content": "now it works"})])


def test_push_webhooks_can_stop_or_change_a_push(
    hooked: Stack, hooks: FakeWebhooks, notifier: FakeProvider, uid: str
) -> None:
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    conv = single_conversation_id(alice, bob)
    hooks.answers["callbackBeforeOnlinePushCommand"] = answer_refusing("silent", 1)
    hooks.answers["callbackBeforeOfflinePushCommand"] = lambda body: {
        "actionCode": 0,
        "offlinePushInfo": {"title": "New message", "desc": "open the app to read it"},
    }
    try:
        with login(hooked, alice) as a, login(hooked, bob, ANDROID) as b:
            hidden = a.send_text(bob, "silent one")["clientMsgID"]
            shown = a.send_text(bob, "loud one")["clientMsgID"]
            assert [m["clientMsgID"] for m in b.pushed_msgs(1, timeout=15)] == [shown]
            assert [m["clientMsgID"] for m in b.pull_range(conv, 1, 2)["Msgs"]] == [hidden, shown]  # stored
            a.send_text(carol, "you are offline")
        [note] = eventually(lambda: notifier.for_user(carol), timeout=30)
        assert (note["title"], note["desc"]) == ("New message", "open the app to read it")
        [call] = [c for c in hooks.of("callbackBeforeOfflinePushCommand") if c["userIDList"] == [carol]]
        assert call["sendID"] == alice and call["platform"] == "Linux"
    finally:
        hooks.answers.pop("callbackBeforeOnlinePushCommand", None)
        hooks.answers.pop("callbackBeforeOfflinePushCommand", None)


def test_user_online_and_offline_callbacks(hooked: Stack, hooks: FakeWebhooks, uid: str) -> None:
    dave = f"dave{uid}"
    client = ImClient(hooked.ws_url, dave, LINUX, mint_token(dave, LINUX))
    client.newest_seqs()
    client.close()

    def of(command: str) -> list[dict[str, Any]]:
        return [c for c in hooks.of(command) if c.get("userID") == dave]

    [online] = eventually(lambda: of("callbackAfterUserOnlineCommand"))
    [offline] = eventually(lambda: of("callbackAfterUserOfflineCommand"))
    assert (online["platformID"], online["platform"], online["isAppBackground"]) == (LINUX, "Linux", False)
    assert offline["platformID"] == LINUX and offline["connID"] == online["connID"]


def test_after_callbacks_are_retried_then_dead_lettered(hooked: Stack, hooks: FakeWebhooks, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    failures = {"left": 2}

    def flaky(command: str, body: dict[str, Any]) -> bool:
        if command != "callbackAfterSendSingleMsgCommand" or body.get("sendID") != alice:
            return False
        if "forever" in body["content"]:
            return True
        failures["left"] -= 1
        return failures["left"] >= 0

    hooks.fail_if = flaky
    try:
        with login(hooked, alice) as a:
            once = a.send_text(bob, "after two failures")["clientMsgID"]
            assert eventually(lambda: len(calls_for(hooks, "callbackAfterSendSingleMsgCommand", once)) == 3)
            never = a.send_text(bob, "fails forever")["clientMsgID"]

            def dead() -> list[Any]:
                return [
                    e
                    for e in dead_letters.list_entries("webhooks", 1000)
                    if any(b.get("clientMsgID") == never for b in e.payload["args"][1])
                ]

            [entry] = eventually(dead, timeout=60)
            assert entry.details["callback"] == "afterSendSingleMsg"
            assert len(calls_for(hooks, "callbackAfterSendSingleMsgCommand", never)) == 3  # 1 + 2 retries
    finally:
        hooks.fail_if = lambda command, body: False


def test_after_revoke_is_called_once(hooked: Stack, hooks: FakeWebhooks, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    with login(hooked, alice) as a:
        a.send_text(bob, "oops")
        assert len(a.pushed_msgs(1, timeout=15)) == 1  # committed (its own copy comes back)
        token = mint_token(alice, LINUX)
        body = {"conversationID": conv, "seq": 1, "userID": alice}
        for _ in range(2):  # the second revoke is answered as done and calls nothing
            assert rest(hooked.gateway_port, "/msg/revoke_msg", body, token)["errCode"] == 0

    def calls() -> list[dict[str, Any]]:
        return [c for c in hooks.of("callbackBeforeAfterMsgCommand") if c["conversationID"] == conv]

    [call] = eventually(calls)
    assert (call["seq"], call["userID"]) == (1, alice)
    time.sleep(0.5)
    assert len(calls()) == 1


def test_server_sends_pass_the_same_before_send_webhooks(hooked: Stack, hooks: FakeWebhooks, uid: str) -> None:
    bot, bob = f"bot{uid}", f"bob{uid}"
    hooks.answers["callbackBeforeSendSingleMsgCommand"] = answer_refusing("spam", 7002)
    admin = admin_token(hooked.gateway_port)
    body = {"sendID": bot, "recvID": bob, "contentType": 101, "sessionType": 1, "senderPlatformID": 10}
    refused = rest(hooked.gateway_port, "/msg/send_msg", {**body, "content": {"content": "spam for all"}}, admin)
    assert (refused["errCode"], refused["errMsg"]) == (7002, "no spam here")
    sent = rest(hooked.gateway_port, "/msg/send_msg", {**body, "content": {"content": "a notice"}}, admin)
    assert sent["errCode"] == 0
    calls = [json.loads(c["content"]) for c in hooks.of("callbackBeforeSendSingleMsgCommand") if c["sendID"] == bot]
    assert calls == [{"content": "spam for all"}, {"content": "a notice"}]

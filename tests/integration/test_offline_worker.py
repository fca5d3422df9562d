"""Offline push through real worker processes, the provider chosen by environment variables.

These workers get a broker of their own (an embedded redis-server), so the session's stack and its
webhook-configured offline worker never take their tasks; data (dead letters, tokens, online
state) stays in the tests' Redis database, MongoDB is the tests' SecantusDB.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from celery import Celery

from app.core import recv_opts
from app.core.constants import SINGLE_CHAT
from app.core.conversation import single_conversation_id
from app.ops import embedded
from app.pipeline import dead_letters
from app.services.auth import mint_token
from app.store.mongo import conversations
from app.store.redis import push_tokens
from app.store.redis.client import get_redis
from app.store.redis.keys import fcm_token_key
from tests.conftest import WORK_DIR
from tests.fake_providers import FakeFcm, FakeGetui, FakeJPush, labelled_metric
from tests.integration.helpers import eventually, login
from tests.stack import Stack

RETRY_ENV = {
    "OFFLINE_PUSH_TIMEOUT": "1",
    "OFFLINE_PUSH_BACKOFF": "0.2",
    "OFFLINE_PUSH_BACKOFF_MAX": "1",
    "OFFLINE_PUSH_MAX_RETRIES": "3",
}


@pytest.fixture(scope="module")
def broker() -> Iterator[str]:
    """redis://... of a private redis-server; each worker below uses a database of its own."""
    port = embedded.free_port()
    proc = embedded.start_redis(port, WORK_DIR / "offline-broker", WORK_DIR / "offline-broker.log")
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


def publisher(broker_url: str) -> Celery:
    app = Celery("offline-test-publisher", broker=broker_url)
    app.conf.task_serializer = "json"
    return app


def publish(app: Celery, conversation_id: str, user_ids: list[str], msgs: list[dict[str, Any]]) -> None:
    app.send_task("offline.push", args=[conversation_id, user_ids, msgs], queue="offline")


def message(sender: str, receiver: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "send_id": sender,
        "recv_id": receiver,
        "group_id": "",
        "session_type": SINGLE_CHAT,
        "client_msg_id": f"cid-{time.monotonic_ns()}",
        "server_msg_id": "sid",
        "seq": 1,
        "content_type": 101,
        "content": json.dumps({"content": text}),
        "send_time": int(time.time() * 1000),
        "options": {},
        "offline_push": None,
        "sender_nickname": "",
        **extra,
    }


def offline_dead_letters(conversation_id: str) -> list[dict[str, Any]]:
    """The offline stage's dead letters for this conversation, each with its details flattened in."""
    rows = dead_letters.list_entries("offline", 10_000)
    return [{**e.as_dict(), **e.details} for e in rows if e.conversation == conversation_id]


# --- the whole pipeline with JPush ------------------------------------------------------------


@pytest.fixture(scope="module")
def jpush() -> Iterator[FakeJPush]:
    with FakeJPush("jp-key", "jp-secret") as fake:
        yield fake


@pytest.fixture(scope="module")
def jpush_stack(infra: dict[str, str], broker: str, jpush: FakeJPush) -> Iterator[Stack]:
    with Stack(WORK_DIR / "stack-jpush", {**infra, "BROKER_URL": f"{broker}/1", **jpush.env(), **RETRY_ENV}) as stack:
        yield stack.start()


@pytest.fixture
def jpush_pub(broker: str) -> Celery:
    return publisher(f"{broker}/1")


def success(stack: Stack, provider: str) -> float:
    return labelled_metric(stack.metrics_ports["offline"], "msg_offline_push_success_total", provider=provider)


def failed(stack: Stack, provider: str) -> float:
    return labelled_metric(stack.metrics_ports["offline"], "msg_offline_push_failed_total", provider=provider)


def test_offline_receiver_is_notified_through_jpush(jpush_stack: Stack, jpush: FakeJPush, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    a = login(jpush_stack, alice)
    try:
        cid = a.send_text(bob, "are you there?")["clientMsgID"]
    finally:
        a.close()
    [push] = eventually(lambda: jpush.pushes_for(conv))
    assert push["audience"] == {"alias": [bob]}
    assert push["notification"]["android"]["title"] == alice
    assert push["notification"]["alert"] == "are you there?"
    assert push["notification"]["android"]["extras"]["clientMsgID"] == cid
    assert jpush.violations == []
    assert eventually(lambda: success(jpush_stack, "jpush") >= 1)


def test_message_without_offline_push_option_is_not_pushed(jpush_stack: Stack, jpush: FakeJPush, uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    a = login(jpush_stack, alice)
    try:
        a.send(bob, 101, json.dumps({"content": "quiet"}), options={"offlinePush": False})
        loud = a.send_text(bob, "loud")["clientMsgID"]
    finally:
        a.close()
    assert eventually(lambda: jpush.pushes_for(conv))
    time.sleep(1.0)  # the quiet one would have come by now
    pushes = jpush.pushes_for(conv)
    assert [p["notification"]["android"]["extras"]["clientMsgID"] for p in pushes] == [loud]


def test_only_receivers_with_recv_msg_opt_0_are_notified(
    jpush_stack: Stack, jpush: FakeJPush, jpush_pub: Celery, uid: str
) -> None:
    conv = f"sg_team{uid}"
    normal, muted, silent, unknown = (f"{name}{uid}" for name in ("normal", "muted", "silent", "unknown"))
    conversations.create_conversations_many({conv: ([normal, muted, silent], 3)})
    assert conversations.set_recv_msg_opt(muted, conv, recv_opts.NOT_RECEIVE)
    assert conversations.set_recv_msg_opt(silent, conv, recv_opts.RECEIVE_NOT_NOTIFY)
    assert not conversations.set_recv_msg_opt(unknown, conv, 1)  # no record: nothing is created
    publish(jpush_pub, conv, [normal, muted, silent, unknown], [message("alice", "", "team news")])
    [push] = eventually(lambda: jpush.pushes_for(conv))
    assert push["audience"]["alias"] == [normal, unknown]


def test_provider_503_twice_then_delivered_exactly_once(
    jpush_stack: Stack, jpush: FakeJPush, jpush_pub: Celery, uid: str
) -> None:
    conv, bob = f"si_alice_bob{uid}", f"bob{uid}"
    before, succeeded = jpush.attempts, success(jpush_stack, "jpush")
    jpush.fail_status, jpush.fail_next = 503, 2
    publish(jpush_pub, conv, [bob], [message("alice", bob, "third time lucky")])
    assert eventually(lambda: jpush.pushes_for(conv))
    time.sleep(1.5)  # longer than any backoff here: a duplicate would have arrived
    assert len(jpush.pushes_for(conv)) == 1
    assert jpush.attempts - before == 3
    assert success(jpush_stack, "jpush") == succeeded + 1
    assert offline_dead_letters(conv) == []


def test_provider_400_is_not_retried_and_is_dead_lettered(
    jpush_stack: Stack, jpush: FakeJPush, jpush_pub: Celery, uid: str
) -> None:
    conv, bob = f"si_alice_bob{uid}", f"bob{uid}"
    before, failures = jpush.attempts, failed(jpush_stack, "jpush")
    jpush.fail_status, jpush.fail_next = 400, 1
    msg = message("alice", bob, "malformed?")
    publish(jpush_pub, conv, [bob], [msg])
    [record] = eventually(lambda: offline_dead_letters(conv))
    assert record["provider"] == "jpush" and record["status"] == 400
    assert record["users"] == [bob] and record["clientMsgIDs"] == [msg["client_msg_id"]]
    assert "400" in record["reason"] and abs(record["time"] - time.time() * 1000) < 60_000
    assert record["stage"] == "offline" and record["payload"] == {"queue": "offline", "args": [conv, [bob], [msg]]}
    time.sleep(1.5)
    assert jpush.attempts - before == 1
    assert jpush.pushes_for(conv) == []
    assert failed(jpush_stack, "jpush") == failures + 1
    assert "given up" in jpush_stack.log_text("offline")


def test_stalled_provider_is_retried_after_the_timeout(
    jpush_stack: Stack, jpush: FakeJPush, jpush_pub: Celery, uid: str
) -> None:
    conv, bob = f"si_alice_bob{uid}", f"bob{uid}"
    before, stalled = jpush.attempts, jpush.stalled
    jpush.stall_seconds, jpush.stall_next = 3.0, 1  # OFFLINE_PUSH_TIMEOUT is 1 s
    started = time.monotonic()
    publish(jpush_pub, conv, [bob], [message("alice", bob, "slow day")])
    assert eventually(lambda: jpush.pushes_for(conv))
    assert time.monotonic() - started >= 1.0
    assert jpush.stalled - stalled == 1
    assert jpush.attempts - before == 2
    assert len(jpush.pushes_for(conv)) == 1


def test_out_of_retries_is_dead_lettered(jpush_stack: Stack, jpush: FakeJPush, jpush_pub: Celery, uid: str) -> None:
    conv, bob = f"si_alice_bob{uid}", f"bob{uid}"
    before = jpush.attempts
    jpush.fail_status, jpush.fail_next = 503, 100
    try:
        publish(jpush_pub, conv, [bob], [message("alice", bob, "never")])
        [record] = eventually(lambda: offline_dead_letters(conv))
    finally:
        jpush.fail_next = 0
    assert record["status"] == 503 and "after 4 attempts" in record["reason"]
    assert jpush.attempts - before == 4  # the first try and OFFLINE_PUSH_MAX_RETRIES=3 retries


def offline_worker(name: str, env: dict[str, str]) -> Iterator[Stack]:
    """An offline worker alone, with the retry settings of these tests, stopped when the module ends."""
    with Stack(WORK_DIR / name, {**env, **RETRY_ENV}) as stack:
        stack.start_worker("offline", "offline")
        yield stack


# --- FCM, the device token registered through /third/fcm_update_token --------------------------


@pytest.fixture(scope="module")
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm("proj-e2e", "access-e2e") as fake:
        yield fake


@pytest.fixture(scope="module")
def fcm_worker(infra: dict[str, str], broker: str, fcm: FakeFcm) -> Iterator[Stack]:
    yield from offline_worker("worker-fcm", {**infra, "BROKER_URL": f"{broker}/2", **fcm.env()})


def third(stack: Stack, body: dict[str, Any], token: str) -> dict[str, Any]:
    resp = requests.post(
        f"http://127.0.0.1:{stack.gateway_port}/third/fcm_update_token", json=body, headers={"token": token}, timeout=10
    )
    assert resp.status_code == 200
    result: dict[str, Any] = resp.json()
    assert set(result) == {"errCode", "errMsg", "errDlt", "data"}
    return result


def test_fcm_update_token_checks_who_and_what(jpush_stack: Stack, uid: str) -> None:
    bob = f"bob{uid}"
    token = mint_token(bob, 2)
    ok = {"platformID": 2, "fcmToken": "tok", "account": bob, "expireTime": 3600}
    assert third(jpush_stack, {**ok, "account": f"eve{uid}"}, token)["errCode"] == 1002
    assert third(jpush_stack, {**ok, "platformID": 7}, token)["errCode"] == 1001
    assert third(jpush_stack, {**ok, "fcmToken": ""}, token)["errCode"] == 1001
    assert third(jpush_stack, {**ok, "expireTime": -1}, token)["errCode"] == 1001
    assert third(jpush_stack, ok, "not-a-token")["errCode"] == 1503
    assert push_tokens.get_fcm_tokens([bob], [2]) == {}
    assert third(jpush_stack, ok, token) == {"errCode": 0, "errMsg": "", "errDlt": "", "data": {}}
    assert push_tokens.get_fcm_tokens([bob], [2]) == {bob: {2: "tok"}}
    assert 3500 < get_redis().ttl(fcm_token_key(bob, 2)) <= 3600


def test_fcm_device_registered_through_the_gateway_gets_the_push(
    jpush_stack: Stack, fcm_worker: Stack, fcm: FakeFcm, broker: str, uid: str
) -> None:
    bob, carol = f"bob{uid}", f"carol{uid}"
    for user, platform, device in ((bob, 1, f"iphone-{uid}"), (bob, 2, f"pixel-{uid}"), (carol, 5, f"web-{uid}")):
        body = {"platformID": platform, "fcmToken": device, "account": user, "expireTime": 0}
        assert third(jpush_stack, body, mint_token(user, platform))["errCode"] == 0
    conv = f"sg_fcm{uid}"
    publish(publisher(f"{broker}/2"), conv, [bob, carol, f"nodevice{uid}"], [message("alice", "", "to all devices")])
    assert eventually(lambda: len(fcm.tokens_sent(conv)) >= 3)
    assert sorted(fcm.tokens_sent(conv)) == sorted([f"iphone-{uid}", f"pixel-{uid}", f"web-{uid}"])
    assert fcm.violations == []
    assert eventually(lambda: success(fcm_worker, "fcm") >= 2)


# --- Getui ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def getui() -> Iterator[FakeGetui]:
    with FakeGetui(f"app-{int(time.time())}", "gt-key", "gt-secret") as fake:
        yield fake


@pytest.fixture(scope="module")
def getui_worker(infra: dict[str, str], broker: str, getui: FakeGetui) -> Iterator[Stack]:
    yield from offline_worker("worker-getui", {**infra, "BROKER_URL": f"{broker}/3", **getui.env()})


def test_getui_worker_single_and_list_pushes_share_one_token(
    getui_worker: Stack, getui: FakeGetui, broker: str, uid: str
) -> None:
    pub = publisher(f"{broker}/3")
    publish(pub, f"si_alice_bob{uid}", [f"bob{uid}"], [message("alice", f"bob{uid}", "hi bob")])
    assert eventually(lambda: getui.singles)
    members = [f"member{i}-{uid}" for i in range(1500)]
    publish(pub, f"sg_big{uid}", members, [message("alice", "", "hi all")])
    assert eventually(lambda: sum(len(a) for _, a in getui.list_pushes) >= 1500)
    assert [s["audience"]["alias"] for s in getui.singles] == [[f"bob{uid}"]]
    assert sorted(len(a) for _, a in getui.list_pushes) == [501, 999]
    assert sorted(a for _, aliases in getui.list_pushes for a in aliases) == sorted(members)
    assert getui.auth_calls == 1
    assert getui.violations == []

"""Each provider against a local imitation that checks requests as the real provider documents them."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import settings as app_settings
from app.pipeline import offline_providers
from app.pipeline.offline_providers import ProviderMisconfigured, PushResult, RejectedError, RetryableError
from app.pipeline.offline_providers.fcm import Fcm
from app.pipeline.offline_providers.getui import MAX_LIST_ALIASES, Getui
from app.pipeline.offline_providers.jpush import JPush
from app.pipeline.offline_providers.webhook import Webhook
from app.store.redis import push_tokens
from app.store.redis.client import get_redis
from app.store.redis.keys import getui_token_key
from tests.fake_providers import FakeFcm, FakeGetui, FakeGoogleOAuth, FakeJPush, FakeProvider


def msgs(conv_peer: str = "bob") -> list[dict[str, Any]]:
    return [
        {
            "send_id": "alice",
            "recv_id": conv_peer,
            "client_msg_id": f"cid-{n}",
            "server_msg_id": f"sid-{n}",
            "seq": n,
            "content_type": 101,
            "content": f'{{"content": "hello {n}"}}',
            "send_time": 1700000000000 + n,
            "options": {},
            "offline_push": None,
        }
        for n in (1, 2)
    ]


@pytest.fixture
def jpush() -> Iterator[FakeJPush]:
    with FakeJPush("jp-key", "jp-secret") as fake:
        yield fake


@pytest.fixture
def getui() -> Iterator[FakeGetui]:
    with FakeGetui(f"app{uuid.uuid4().hex[:6]}", "gt-key", "gt-secret") as fake:
        yield fake


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    with FakeFcm("proj-1", "access-1") as fake:
        yield fake


def jpush_client(fake: FakeJPush, secret: str = "jp-secret", timeout: float = 5.0) -> JPush:
    return JPush(fake.url, "jp-key", secret, apns_production=False, timeout=timeout)


def getui_client(fake: FakeGetui, secret: str = "gt-secret") -> Getui:
    return Getui(fake.url, fake.app_id, "gt-key", secret, timeout=5.0)


# --- JPush -----------------------------------------------------------------------------------


def test_jpush_pushes_by_alias_with_basic_auth_and_our_sendno(jpush: FakeJPush) -> None:
    result = jpush_client(jpush).send("si_alice_bob", ["bob", "carol"], "alice", "hello 2", msgs(), {})
    assert result == PushResult(delivered=["bob", "carol"])
    assert jpush.violations == []
    [body] = jpush.pushes
    assert body["audience"] == {"alias": ["bob", "carol"]}
    assert body["notification"]["alert"] == "hello 2"
    assert body["notification"]["android"]["title"] == "alice"
    assert body["notification"]["ios"]["alert"] == {"title": "alice", "body": "hello 2"}
    assert body["notification"]["android"]["extras"]["clientMsgID"] == "cid-2"
    assert body["options"]["sendno"] > 0


def test_jpush_answer_with_another_sendno_is_a_failure(jpush: FakeJPush) -> None:
    jpush.wrong_sendno_next = 1
    with pytest.raises(RejectedError) as caught:
        jpush_client(jpush).send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
    assert caught.value.status == "sendno"
    assert caught.value.delivered == []


def test_jpush_wrong_master_secret_is_refused(jpush: FakeJPush) -> None:
    with pytest.raises(RejectedError) as caught:
        jpush_client(jpush, secret="wrong").send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
    assert caught.value.status == 401
    assert jpush.pushes == []


def test_jpush_sends_at_most_1000_aliases_a_push(jpush: FakeJPush) -> None:
    users = [f"user{i}" for i in range(2500)]
    result = jpush_client(jpush).send("sg_big", users, "alice", "hi", msgs(), {})
    assert [len(p["audience"]["alias"]) for p in jpush.pushes] == [1000, 1000, 500]
    assert jpush.aliases() == users == result.delivered
    assert len({p["options"]["sendno"] for p in jpush.pushes}) == 3
    assert jpush.violations == []


def test_jpush_failure_mid_way_reports_the_parts_delivered(jpush: FakeJPush) -> None:
    users = [f"user{i}" for i in range(2500)]
    jpush.fail_after, jpush.fail_next = 1, 1
    with pytest.raises(RetryableError) as caught:
        jpush_client(jpush).send("sg_big", users, "alice", "hi", msgs(), {})
    assert caught.value.status == 503
    assert caught.value.delivered == users[:1000]


def test_jpush_aliases_without_devices_are_skipped(jpush: FakeJPush) -> None:
    jpush.unknown_aliases = {"ghost"}
    result = jpush_client(jpush).send("si_alice_ghost", ["ghost"], "alice", "hi", msgs("ghost"), {})
    assert result == PushResult(delivered=[], skipped=["ghost"])


def test_jpush_stall_is_a_retryable_timeout(jpush: FakeJPush) -> None:
    jpush.stall_next, jpush.stall_seconds = 1, 1.5
    with pytest.raises(RetryableError) as caught:
        jpush_client(jpush, timeout=0.5).send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
    assert caught.value.status == "timeout"
    jpush.fail_next, jpush.fail_status = 1, 429
    with pytest.raises(RetryableError) as caught:
        jpush_client(jpush).send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
    assert caught.value.status == 429


# --- Getui -----------------------------------------------------------------------------------


def test_getui_signs_in_once_and_reuses_the_token(clean_redis: str, getui: FakeGetui) -> None:
    client = getui_client(getui)
    for peer in ("bob", "carol", "dave"):
        assert client.send(f"si_alice_{peer}", [peer], "alice", "hi", msgs(peer), {}).delivered == [peer]
    assert getui.auth_calls == 1
    assert [s["audience"]["alias"] for s in getui.singles] == [["bob"], ["carol"], ["dave"]]
    assert getui.list_pushes == [] and getui.violations == []
    # kept in Redis for 23 h, so another worker process uses it too
    ttl = get_redis().ttl(getui_token_key(getui.app_id))
    assert 22 * 3600 < ttl <= 23 * 3600
    assert getui_client(getui).send("si_alice_erin", ["erin"], "alice", "hi", msgs("erin"), {}).delivered == ["erin"]
    assert getui.auth_calls == 1
    first = getui.singles[0]
    assert first["push_message"]["notification"]["title"] == "alice"
    assert 10 <= len(first["request_id"]) <= 32
    assert len({s["request_id"] for s in getui.singles}) == 4


def test_getui_refreshes_the_token_after_an_auth_error(clean_redis: str, getui: FakeGetui) -> None:
    client = getui_client(getui)
    client.send("si_alice_bob", ["bob"], "alice", "one", msgs(), {})
    getui.expire_tokens()
    client.send("si_alice_bob", ["bob"], "alice", "two", msgs(), {})
    assert getui.auth_calls == 2
    assert getui.refused_tokens == 1
    assert [s["push_message"]["notification"]["body"] for s in getui.singles] == ["one", "two"]
    client.send("si_alice_bob", ["bob"], "alice", "three", msgs(), {})
    assert getui.auth_calls == 2


def test_getui_list_push_goes_in_chunks_of_999(clean_redis: str, getui: FakeGetui) -> None:
    users = [f"member{i}" for i in range(1500)]
    result = getui_client(getui).send("sg_team", users, "alice", "hi all", msgs(), {})
    assert result.delivered == users
    assert getui.singles == [] and len(getui.tasks) == 1
    [taskid] = getui.tasks
    assert [len(aliases) for _, aliases in getui.list_pushes] == [MAX_LIST_ALIASES, 501]
    assert {t for t, _ in getui.list_pushes} == {taskid}
    assert [a for _, aliases in getui.list_pushes for a in aliases] == users
    assert getui.violations == []


def test_getui_list_push_failure_reports_the_chunks_delivered(clean_redis: str, getui: FakeGetui) -> None:
    users = [f"member{i}" for i in range(1500)]
    client = getui_client(getui)
    client.token()
    getui.fail_after, getui.fail_next = 2, 1  # the task and the first chunk pass, the second fails
    with pytest.raises(RetryableError) as caught:
        client.send("sg_team", users, "alice", "hi all", msgs(), {})
    assert caught.value.delivered == users[:999]


def test_getui_wrong_secret_is_refused(clean_redis: str, getui: FakeGetui) -> None:
    with pytest.raises(RejectedError):
        getui_client(getui, secret="wrong").send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
    assert getui.violations == ["wrong sign"] and getui.singles == []


# --- FCM -------------------------------------------------------------------------------------


def test_fcm_sends_one_message_per_device_token_with_the_bearer(clean_redis: str, fcm: FakeFcm, uid: str) -> None:
    bob, carol, dave = f"bob{uid}", f"carol{uid}", f"dave{uid}"
    push_tokens.set_fcm_token(bob, 1, f"ios-{bob}", 3600)
    push_tokens.set_fcm_token(bob, 2, f"android-{bob}", 0)
    push_tokens.set_fcm_token(carol, 5, f"web-{carol}", 3600)
    push_tokens.set_fcm_token(carol, 7, f"linux-{carol}", 3600)  # not a platform FCM serves
    client = Fcm(fcm.url, "proj-1", lambda refresh=False: "access-1", timeout=5.0)
    result = client.send("sg_team", [bob, carol, dave], "alice", "hello 2", msgs(), {bob: 3, carol: 7})
    assert result == PushResult(delivered=[bob, carol], skipped=[dave])
    assert sorted(fcm.tokens_sent()) == sorted([f"ios-{bob}", f"android-{bob}", f"web-{carol}"])
    assert fcm.violations == []
    badges = {m["token"]: (m["apns"]["payload"]["aps"]["badge"], m["android"]["notification"]) for m in fcm.messages}
    assert badges == {
        f"ios-{bob}": (3, {"notification_count": 3}),
        f"android-{bob}": (3, {"notification_count": 3}),
        f"web-{carol}": (7, {"notification_count": 7}),
    }
    message = fcm.messages[0]
    assert message["notification"] == {"title": "alice", "body": "hello 2"}
    assert message["data"]["conversationID"] == "sg_team"
    assert message["data"]["clientMsgID"] == "cid-2"


def test_fcm_forgets_tokens_it_no_longer_knows(clean_redis: str, fcm: FakeFcm, uid: str) -> None:
    bob = f"bob{uid}"
    push_tokens.set_fcm_token(bob, 2, "stale-token", 3600)
    fcm.unregistered.add("stale-token")
    client = Fcm(fcm.url, "proj-1", lambda refresh=False: "access-1", timeout=5.0)
    assert client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {}) == PushResult(delivered=[], skipped=[bob])
    assert push_tokens.get_fcm_tokens([bob], [1, 2, 5]) == {}


def test_fcm_refused_access_token_is_asked_again_once(clean_redis: str, fcm: FakeFcm, uid: str) -> None:
    bob = f"bob{uid}"
    push_tokens.set_fcm_token(bob, 2, "device", 3600)
    handed_out = iter(["expired", "access-1"])
    client = Fcm(fcm.url, "proj-1", lambda refresh=False: next(handed_out), timeout=5.0)
    assert client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {}).delivered == [bob]
    wrong = Fcm(fcm.url, "proj-1", lambda refresh=False: "wrong", timeout=5.0)
    with pytest.raises(RejectedError) as caught:
        wrong.send("si_alice_bob", [bob], "alice", "hi", msgs(), {})
    assert caught.value.status == 401
    assert fcm.tokens_sent() == ["device"]


# --- FCM with a service-account key: google-auth against a local token endpoint --------------------


@pytest.fixture
def service_account(tmp_path: Path) -> Iterator[tuple[Path, FakeGoogleOAuth]]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    email = "pusher@proj-sa.iam.gserviceaccount.com"
    with FakeGoogleOAuth(public_pem, email) as oauth:
        path = tmp_path / "service-account.json"
        path.write_text(
            json.dumps(
                {
                    "type": "service_account",
                    "project_id": "proj-sa",
                    "private_key_id": "key-1",
                    "private_key": private_pem.decode(),
                    "client_email": email,
                    "client_id": "1",
                    "token_uri": oauth.token_uri,
                }
            )
        )
        yield path, oauth


def test_fcm_service_account_tokens_are_minted_reused_and_refreshed(
    clean_redis: str, service_account: tuple[Path, FakeGoogleOAuth], uid: str
) -> None:
    path, oauth = service_account
    bob = f"bob{uid}"
    push_tokens.set_fcm_token(bob, 2, "pixel", 0)
    with FakeFcm("proj-sa", "none yet") as fcm:
        oauth.on_issue = lambda token: setattr(fcm, "access_token", token)
        settings = replace(
            app_settings,
            offline_push_provider="fcm",
            fcm_url=fcm.url,
            fcm_credentials_file=str(path),
            fcm_project_id="",
        )
        client = offline_providers.create(settings)
        assert isinstance(client, Fcm)  # the project comes from the key file
        for _ in range(2):
            assert client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {bob: 1}).delivered == [bob]
        assert oauth.issued == ["ya29.fake-1"]  # one token, reused while it is valid
        assert oauth.scopes == ["https://www.googleapis.com/auth/firebase.messaging"]

        fcm.access_token = "revoked-elsewhere"  # FCM refuses the token: a fresh one is minted at once
        oauth.expires_in = 60  # from now on within google-auth's refresh margin: every call refreshes
        assert client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {bob: 1}).delivered == [bob]
        assert oauth.issued == ["ya29.fake-1", "ya29.fake-2"]
        client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {bob: 1})
        client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {bob: 1})
        assert len(oauth.issued) == 4

        oauth.fail_next, oauth.fail_status = 100, 503  # the token endpoint is down: the task retries later
        with pytest.raises(RetryableError):
            client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {bob: 1})
        assert fcm.tokens_sent() == ["pixel"] * 5
        oauth.fail_next, oauth.fail_status = 100, 400  # the key is refused: no retry
        with pytest.raises(RejectedError):
            client.send("si_alice_bob", [bob], "alice", "hi", msgs(), {bob: 1})
        oauth.fail_next = 0
        assert fcm.violations == [] and oauth.violations == []


def test_fcm_service_account_file_that_is_not_a_key_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "not-a-key.json"
    path.write_text('{"type": "authorized_user"}')
    settings = replace(app_settings, offline_push_provider="fcm", fcm_credentials_file=str(path))
    with pytest.raises(ProviderMisconfigured):
        offline_providers.create(settings)


# --- webhook ---------------------------------------------------------------------------------


def test_webhook_status_decides_retry_or_refusal() -> None:
    fake = FakeProvider()
    try:
        hook = Webhook(fake.url, timeout=5.0)
        assert hook.send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {}).delivered == ["bob"]
        fake.fail_next, fake.fail_status = 1, 503
        with pytest.raises(RetryableError):
            hook.send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
        fake.fail_next, fake.fail_status = 1, 400
        with pytest.raises(RejectedError):
            hook.send("si_alice_bob", ["bob"], "alice", "hi", msgs(), {})
        assert [r["userIDs"] for r in fake.received] == [["bob"]]
    finally:
        fake.close()

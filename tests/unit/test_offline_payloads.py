"""Pure parts of offline push: provider selection, payload builders, signatures, backoff."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
from typing import Any

import pytest

from app.config import Settings
from app.pipeline import offline_providers
from app.pipeline.offline_providers import ProviderMisconfigured
from app.pipeline.offline_providers.base import ProviderError, RetryableError, chunks, deliver_in_parts, push_extras
from app.pipeline.offline_providers.fcm import Fcm, build_message, fcm_error_code, token_source
from app.pipeline.offline_providers.getui import Getui, push_content, sign
from app.pipeline.offline_providers.jpush import JPush, basic_auth, build_body, new_sendno
from app.pipeline.offline_providers.webhook import Webhook, build_payload
from app.tasks import offline


def msg(**extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "send_id": "alice",
        "recv_id": "bob",
        "client_msg_id": "c1",
        "server_msg_id": "s1",
        "seq": 7,
        "content_type": 101,
        "content": '{"content": "hi bob"}',
        "send_time": 1,
        "options": {},
        "offline_push": None,
        "sender_nickname": "",
    }
    return {**base, **extra}


def settings(**changes: Any) -> Settings:
    return dataclasses.replace(Settings(), **changes)


def test_provider_is_chosen_by_configuration() -> None:
    assert offline_providers.create(settings(offline_push_provider="webhook", offline_push_url="")) is None
    assert isinstance(offline_providers.create(settings(offline_push_url="http://x/push")), Webhook)
    jpush = settings(offline_push_provider="JPush", jpush_app_key="k", jpush_master_secret="s")
    assert isinstance(offline_providers.create(jpush), JPush)
    getui = settings(offline_push_provider="getui", getui_app_id="a", getui_app_key="k", getui_master_secret="s")
    assert isinstance(offline_providers.create(getui), Getui)
    fcm = settings(offline_push_provider="fcm", fcm_project_id="p", fcm_access_token="t")
    assert isinstance(offline_providers.create(fcm), Fcm)


@pytest.mark.parametrize(
    "changes",
    [
        {"offline_push_provider": "apns"},
        {"offline_push_provider": "jpush"},
        {"offline_push_provider": "getui", "getui_app_key": "k", "getui_master_secret": "s"},
        {"offline_push_provider": "fcm", "fcm_project_id": "p"},
        {"offline_push_provider": "fcm", "fcm_project_id": "p", "fcm_token_provider": "no_colon"},
    ],
)
def test_missing_or_unknown_configuration_is_refused(changes: dict[str, Any]) -> None:
    with pytest.raises(ProviderMisconfigured):
        offline_providers.create(settings(**changes))


def test_defaults_point_at_the_real_providers() -> None:
    defaults = Settings()
    assert defaults.offline_push_provider == "webhook"
    assert defaults.jpush_url == "https://api.jpush.cn/v3/push"
    assert defaults.getui_url == "https://restapi.getui.com/v2"
    assert defaults.fcm_url == "https://fcm.googleapis.com"


def test_fcm_token_provider_is_a_function_named_by_path() -> None:
    source = token_source("static", "tests.unit.test_offline_payloads:fresh_token")
    assert source() == "fresh-1" and source() == "fresh-2"
    assert token_source("static", "")() == "static"


_calls = 0


def fresh_token() -> str:
    global _calls
    _calls += 1
    return f"fresh-{_calls}"


def test_notification_text_prefers_offline_push_info() -> None:
    assert offline.notification_text(msg()) == ("alice", "hi bob")
    assert offline.notification_text(msg(sender_nickname="Alice")) == ("Alice", "hi bob")
    info = {"title": "New order", "desc": "Order 42 shipped", "ex": "", "ios_push_sound": "", "ios_badge_count": False}
    assert offline.notification_text(msg(offline_push=info)) == ("New order", "Order 42 shipped")
    assert offline.notification_text(msg(content="not json")) == ("alice", "You have a new message")


def test_jpush_body() -> None:
    extras = push_extras("si_alice_bob", [msg()])
    body = build_body(["bob", "carol"], "alice", "hi bob", extras, 12345, apns_production=True)
    assert body["platform"] == "all"
    assert body["audience"] == {"alias": ["bob", "carol"]}
    assert body["notification"]["android"] == {"alert": "hi bob", "title": "alice", "extras": extras}
    assert body["notification"]["ios"]["alert"] == {"title": "alice", "body": "hi bob"}
    assert body["options"]["sendno"] == 12345 and body["options"]["apns_production"] is True
    assert extras == {"conversationID": "si_alice_bob", "clientMsgID": "c1", "sendID": "alice", "seq": "7", "ex": ""}
    assert basic_auth("key", "secret") == "Basic " + base64.b64encode(b"key:secret").decode()
    assert all(1 <= new_sendno() < 2**31 for _ in range(100))


def test_getui_sign_is_sha256_hex_of_key_timestamp_secret() -> None:
    expected = hashlib.sha256(b"appkey1700000000000secret").hexdigest()
    assert sign("appkey", 1700000000000, "secret") == expected
    content = push_content("alice", "hi", push_extras("si_a_b", [msg()]), "default", "chan")
    note = content["push_message"]["notification"]
    assert (note["title"], note["body"], note["click_type"], note["channel_id"]) == ("alice", "hi", "startapp", "chan")
    assert content["push_channel"]["ios"]["aps"]["alert"] == {"title": "alice", "body": "hi"}


def test_fcm_message_and_error_code() -> None:
    message = build_message("device-1", "alice", "hi", {"conversationID": "si_a_b"}, "ding", 4)["message"]
    assert message["token"] == "device-1"
    assert message["notification"] == {"title": "alice", "body": "hi"}
    assert message["data"] == {"conversationID": "si_a_b"}
    assert message["apns"]["payload"]["aps"] == {"sound": "ding", "badge": 4}
    assert message["android"]["notification"] == {"notification_count": 4}
    answer = {"error": {"status": "NOT_FOUND", "details": [{"errorCode": "UNREGISTERED"}]}}
    assert fcm_error_code(answer) == "UNREGISTERED"
    assert fcm_error_code({"error": {"status": "UNAVAILABLE"}}) == "UNAVAILABLE"


def test_webhook_body_keeps_its_shape() -> None:
    body = build_payload("si_alice_bob", ["bob"], "alice", "hi bob", [msg()], {"bob": 2, "eve": 9})
    assert body == {
        "userIDs": ["bob"],
        "badges": {"bob": 2},
        "conversationID": "si_alice_bob",
        "title": "alice",
        "desc": "hi bob",
        "count": 1,
        "msgs": [
            {
                "sendID": "alice",
                "clientMsgID": "c1",
                "serverMsgID": "s1",
                "seq": 7,
                "contentType": 101,
                "content": '{"content": "hi bob"}',
                "sendTime": 1,
            }
        ],
    }


def test_parts_report_what_went_through_before_a_failure() -> None:
    users = [f"u{i}" for i in range(2500)]
    assert [len(c) for c in chunks(users, 999)] == [999, 999, 502]
    sent: list[list[str]] = []

    def push_part(part: list[str]) -> None:
        if len(sent) == 2:
            raise RetryableError("down", 503)
        sent.append(part)

    with pytest.raises(ProviderError) as caught:
        deliver_in_parts(chunks(users, 1000), push_part)
    assert caught.value.delivered == users[:2000]


def test_retry_delay_grows_and_is_capped() -> None:
    assert 0.5 <= offline.retry_delay(0, 1.0, 10.0) <= 1.0
    assert 4.0 <= offline.retry_delay(3, 1.0, 10.0) <= 8.0
    assert 5.0 <= offline.retry_delay(20, 1.0, 10.0) <= 10.0
    assert offline.retry_delay(0, 1.0, 10.0, asked=7.0) == 7.0  # the provider's Retry-After, within the cap
    assert offline.retry_delay(0, 1.0, 10.0, asked=100.0) == 10.0

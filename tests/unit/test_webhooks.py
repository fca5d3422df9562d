import json

import pytest

from app.core import webhooks as rules
from app.core.webhooks import CallbackConfig, ConfigError


def msg(**fields: object) -> dict[str, object]:
    base: dict[str, object] = {
        "send_id": "alice",
        "recv_id": "bob",
        "group_id": "",
        "session_type": 1,
        "content_type": 101,
        "content": json.dumps({"content": "hi"}),
        "client_msg_id": "c1",
        "server_msg_id": "s1",
        "sender_platform_id": 5,
        "seq": 7,
        "options": {},
    }
    return {**base, **fields}


def test_parse_config_reads_openims_webhooks_yml_shape() -> None:
    config = rules.parse_config(
        {
            "url": "http://hooks.example/im/",
            "beforeSendSingleMsg": {"enable": True, "timeout": 2, "failedContinue": False, "deniedTypes": [113]},
            "afterSendGroupMsg": {"enable": True, "attentionIds": ["g1"]},
            "beforeAddFriend": {"enable": True},  # a callback we do not run: ignored
            "afterMsgSaveDB": {"enable": False},
        }
    )
    assert config.url == "http://hooks.example/im"
    assert config.enabled("beforeSendSingleMsg") == CallbackConfig(True, 2.0, False, frozenset({113}), frozenset())
    after_group = config.enabled("afterSendGroupMsg")
    assert after_group is not None and after_group.attention_ids == {"g1"} and after_group.failed_continue
    assert config.enabled("afterMsgSaveDB") is None and config.enabled("beforeAddFriend") is None
    # no url: nothing is called
    assert rules.parse_config({"beforeSendSingleMsg": {"enable": True}}).enabled("beforeSendSingleMsg") is None


@pytest.mark.parametrize(
    "entry",
    [{"timeout": 0}, {"timeout": "5"}, {"timeout": 61}, {"deniedTypes": "113"}, {"attentionIds": [1]}, "yes"],
)
def test_parse_config_refuses_a_malformed_entry(entry: object) -> None:
    with pytest.raises(ConfigError):
        rules.parse_config({"url": "http://h", "beforeSendSingleMsg": entry})


def test_config_from_names() -> None:
    config = rules.config_from_names("http://h", "beforeSendSingleMsg, afterUserOnline", 3.0, False)
    assert sorted(n for n in rules.COMMANDS if config.enabled(n)) == ["afterUserOnline", "beforeSendSingleMsg"]
    assert config.callbacks["afterUserOnline"].timeout == 3.0
    assert not config.callbacks["beforeSendSingleMsg"].failed_continue
    with pytest.raises(ConfigError, match="unknown"):
        rules.config_from_names("http://h", "beforeSendMsg", 5.0, True)


def test_who_sees_what() -> None:
    plain = CallbackConfig(enable=True)
    assert rules.sees(plain, msg())
    assert not rules.sees(plain, msg(content_type=113))  # typing never
    assert not rules.sees(CallbackConfig(True, denied_types=frozenset({101})), msg())
    watching = CallbackConfig(True, attention_ids=frozenset({"bob", "g1"}))
    assert rules.sees(watching, msg()) and not rules.sees(watching, msg(recv_id="carol"))
    assert rules.sees(watching, msg(session_type=3, recv_id="", group_id="g1"))
    assert not rules.sees(watching, msg(session_type=3, recv_id="bob", group_id="g2"))


def test_refusal_is_action_code_0_with_next_code_1() -> None:
    assert rules.refusal({"actionCode": 0, "nextCode": 1, "errCode": 5001, "errMsg": "no"}) == rules.Refusal(5001, "no")
    assert rules.refusal({"actionCode": 0, "nextCode": 0, "errCode": 5001}) is None
    assert rules.refusal({"actionCode": 1, "nextCode": 1, "errCode": 5001}) is None
    assert rules.refusal({}) is None
    assert rules.refusal({"actionCode": False, "nextCode": True}) is None  # booleans are not codes


def test_message_body_has_openims_fields() -> None:
    body = rules.message_body("beforeSendSingleMsg", msg(), "op-1")
    assert body["callbackCommand"] == "callbackBeforeSendSingleMsgCommand"
    assert (body["sendID"], body["recvID"], body["operationID"], body["seq"]) == ("alice", "bob", "op-1", 7)
    assert body["content"] == json.dumps({"content": "hi"}) and "groupID" not in body
    group = rules.message_body("afterSendGroupMsg", msg(session_type=3, group_id="g1"), "op")
    assert group["groupID"] == "g1" and "recvID" not in group
    saved = rules.message_body("afterMsgSaveDB", msg(), "op")
    assert saved["recvID"] == "bob" and saved["groupID"] == ""
    # a notification's content is its detail
    tip = msg(content_type=1501, content=json.dumps({"detail": '{"group": 1}'}))
    assert rules.message_body("afterSendGroupMsg", tip, "op")["content"] == '{"group": 1}'


def test_push_bodies() -> None:
    online = rules.push_body("beforeOnlinePush", msg(), ["bob"], "op")
    assert online["userIDList"] == ["bob"] and online["platform"] == "Web" and "seq" not in online
    group = rules.push_body("beforeGroupOnlinePush", msg(session_type=3, group_id="g"), [], "op")
    assert group["seq"] == 7 and "userIDList" not in group
    offline = rules.push_body("beforeOfflinePush", msg(offline_push={"title": "t", "desc": "d"}), ["bob"], "op")
    assert (offline["title"], offline["desc"]) == ("t", "d")
    assert rules.user_ids_answer({"userIDList": ["a", "b"]}) == ["a", "b"]
    assert rules.user_ids_answer({"userIDList": []}) is None and rules.user_ids_answer({"userIDList": [1]}) is None


def test_modified_changes_what_may_change_and_checks_it() -> None:
    out = rules.modified(
        msg(),
        {
            "content": '{"content": "edited"}',
            "recvID": "mallory",  # routing: not changed here
            "ex": "x",
            "options": {"offlinePush": False},
            "offlinePushInfo": {"title": "T", "iOSBadgeCount": True},
        },
    )
    assert out["content"] == '{"content": "edited"}' and out["recv_id"] == "bob" and out["ex"] == "x"
    assert out["options"] == {"offlinePush": False}
    assert out["offline_push"]["title"] == "T" and out["offline_push"]["ios_badge_count"] is True
    assert rules.modified(msg(), {"content": None}) == msg()
    for bad in ({"content": "not json"}, {"content": 5}, {"contentType": "101"}, {"options": {"a": 1}}, {"ex": 3}):
        with pytest.raises(ValueError):
            rules.modified(msg(), bad)

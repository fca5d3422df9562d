"""Browsers reach the REST API (CORS, as OpenIM's api answers them), and the REST calls openim-sdk-core
v3.8.3 makes at login and sync are served in OpenIM's shapes (docs/openim-sdk-core.md)."""

from __future__ import annotations

from typing import Any

import requests

from app.core.constants import LINUX
from app.services.auth import mint_token
from tests.integration.helpers import eventually, login, rest

ORIGIN = "http://web.example"


def test_preflight_answers_openim_headers(stack: Any) -> None:
    for path in ("/user/get_users_info", "/conversation/get_owner_conversation", "/group/get_joined_group_list"):
        resp = requests.options(
            f"http://127.0.0.1:{stack.gateway_port}{path}",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "token,operationID,content-type",
            },
            timeout=10,
        )
        assert 200 <= resp.status_code < 300, (path, resp.status_code)
        assert resp.headers["Access-Control-Allow-Origin"] in (ORIGIN, "*")
        methods = {m.strip().upper() for m in resp.headers["Access-Control-Allow-Methods"].split(",")}
        assert {"POST", "GET", "OPTIONS"} <= methods
        allowed = {h.strip().lower() for h in resp.headers["Access-Control-Allow-Headers"].split(",")}
        assert {"token", "operationid", "content-type"} <= allowed
        assert "content-type" in resp.headers["Access-Control-Expose-Headers"].lower()


def test_answers_carry_allow_origin(stack: Any, uid: str) -> None:
    user = f"cors{uid}"
    resp = requests.post(
        f"http://127.0.0.1:{stack.gateway_port}/user/get_users_info",
        json={"userIDs": [user]},
        headers={"Origin": ORIGIN, "token": mint_token(user, LINUX), "operationID": "op-cors"},
        timeout=10,
    )
    assert resp.status_code == 200
    assert resp.json()["errCode"] == 0
    assert resp.headers["Access-Control-Allow-Origin"] in (ORIGIN, "*")


def test_core_sdk_sync_calls(stack: Any, uid: str) -> None:
    alice, bob = f"sa{uid}", f"sb{uid}"
    token = mint_token(alice, LINUX)
    port = stack.gateway_port
    with login(stack, alice) as a:
        a.send_text(bob, "hello")
    conv = "si_" + "_".join(sorted((alice, bob)))

    def owner_page() -> dict[str, Any] | None:
        answer = rest(
            port,
            "/conversation/get_owner_conversation",
            {"userID": alice, "pagination": {"pageNumber": 1, "showNumber": 20}},
            token,
        )
        assert answer["errCode"] == 0, answer
        data: dict[str, Any] = answer["data"]
        return data if data["total"] == 1 and data["conversations"][0]["maxSeq"] else None  # stored, seq visible

    data = eventually(owner_page)
    assert data, "the conversation never showed up"
    (item,) = data["conversations"]
    assert (item["conversationID"], item["ownerUserID"], item["userID"]) == (conv, alice, bob)
    assert item["conversationType"] == 1
    assert isinstance(item["maxSeq"], int) and item["maxSeq"] >= 1  # a number: Go's encoding/json reads it
    assert isinstance(item["minSeq"], int)

    answer = rest(port, "/conversation/get_full_conversation_ids", {"userID": alice, "idHash": 0}, token)
    assert answer["errCode"] == 0, answer
    assert answer["data"]["conversationIDs"] == [conv]
    assert {"version", "versionID", "equal"} <= set(answer["data"])

    answer = rest(port, "/conversation/get_all_conversations", {"ownerUserID": alice}, token)
    assert answer["errCode"] == 0, answer
    assert [c["conversationID"] for c in answer["data"]["conversations"]] == [conv]

    answer = rest(port, "/conversation/get_conversations", {"ownerUserID": alice, "conversationIDs": [conv]}, token)
    assert answer["errCode"] == 0, answer
    assert [c["conversationID"] for c in answer["data"]["conversations"]] == [conv]

    page = {"pageNumber": 1, "showNumber": 100}
    answer = rest(port, "/friend/get_friend_list", {"userID": alice, "pagination": page}, token)
    assert answer["errCode"] == 0, answer
    assert answer["data"] == {"total": 0, "friendsInfo": []}
    answer = rest(port, "/friend/get_black_list", {"userID": alice, "pagination": page}, token)
    assert answer["errCode"] == 0, answer
    assert answer["data"] == {"total": 0, "blacks": []}

    # a user's token speaks only for that user
    answer = rest(port, "/conversation/get_owner_conversation", {"userID": bob}, token)
    assert answer["errCode"] != 0

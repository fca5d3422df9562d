"""Admin REST on the gateway port: tokens are minted only for holders of the admin secret."""

from __future__ import annotations

import os
from typing import Any

import requests

from app.cli.client import ImClient
from app.services.auth import mint_token, parse_token


def post(stack: Any, path: str, body: object, token: str | None = None) -> dict[str, Any]:
    headers = {"operationID": "test-op"}
    if token is not None:
        headers["token"] = token
    resp = requests.post(f"http://127.0.0.1:{stack.gateway_port}{path}", json=body, headers=headers, timeout=10)
    assert resp.status_code == 200
    result: dict[str, Any] = resp.json()
    assert set(result) == {"errCode", "errMsg", "errDlt", "data"}
    return result


def admin_token(stack: Any) -> str:
    resp = post(stack, "/auth/get_admin_token", {"secret": os.environ["ADMIN_SECRET"], "userID": "imAdmin"})
    assert resp["errCode"] == 0, resp
    token: str = resp["data"]["token"]
    return token


def test_user_token_minted_by_admin_logs_in(stack: Any, uid: str) -> None:
    resp = post(stack, "/auth/get_user_token", {"platformID": 5, "userID": f"web{uid}"}, token=admin_token(stack))
    assert resp["errCode"] == 0, resp
    assert resp["data"]["expireTimeSeconds"] > 0
    token = resp["data"]["token"]
    claims = parse_token(token)
    assert (claims.user_id, claims.platform_id, claims.admin) == (f"web{uid}", 5, False)
    client = ImClient(stack.ws_url, f"web{uid}", 5, token)
    try:
        assert client.newest_seqs() == {}
    finally:
        client.close()


def test_wrong_admin_secret_is_refused(stack: Any) -> None:
    resp = post(stack, "/auth/get_admin_token", {"secret": "guess", "userID": "imAdmin"})
    assert resp["errCode"] == 1002
    assert resp["data"] is None


def test_user_token_needs_an_admin_token(stack: Any, uid: str) -> None:
    body = {"platformID": 5, "userID": f"victim{uid}"}
    assert post(stack, "/auth/get_user_token", body)["errCode"] == 1503  # no token at all
    assert post(stack, "/auth/get_user_token", body, token=mint_token(f"user{uid}", 5))["errCode"] == 1002
    forged = mint_token("imAdmin", 10, admin=True, secret="not-the-server-secret-0123456789abcdef")
    assert post(stack, "/auth/get_user_token", body, token=forged)["errCode"] in (1502, 1503)


def test_bad_bodies(stack: Any) -> None:
    token = admin_token(stack)
    assert post(stack, "/auth/get_user_token", ["not", "an", "object"], token=token)["errCode"] == 1001
    assert post(stack, "/auth/get_user_token", {"platformID": "5", "userID": "x"}, token=token)["errCode"] == 1001
    assert post(stack, "/auth/get_user_token", {"platformID": 10, "userID": "x"}, token=token)["errCode"] == 1001
    assert post(stack, "/auth/get_user_token", {"platformID": 5, "userID": ""}, token=token)["errCode"] == 1001

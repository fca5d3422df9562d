"""Secrets and token revocation (issue 14, items 3 and 5), against the real stack.

A revoked token (kicked by a newer login, force-logged-out, logged out with 2003, an admin token
force-logged-out on platform 10) is refused on every interface: the websocket login and the REST
routes of each blueprint (OpenIM user API, groups, /third, admin). A token signed with the user key
is never an admin token. An open socket is closed when its token expires. Processes that sign or
check tokens refuse to start without real secrets, unless APP_ENV=development.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
import websocket

from app.cli.client import ImClient, connect_url
from app.config import secrets
from app.core import protocol
from app.core.constants import LINUX, WEB
from app.core.errors import TOKEN_KICKED as KICKED
from app.ops import embedded
from app.services.auth import ADMIN_PLATFORM, mint_token, parse_token
from tests.integration.helpers import admin_token, rest
from tests.stack import ROOT

SECRET_VARS = ("TOKEN_SECRET", "ADMIN_SECRET", "APP_ENV", "APP_DATA_DIR")


def ws_refusal(stack: Any, user: str, platform: int, token: str) -> int:
    """The errCode a websocket login with this token gets."""
    ws = websocket.create_connection(connect_url(stack.ws_url, user, platform, token), timeout=10)
    try:
        code: int = json.loads(ws.recv())["errCode"]
        return code
    finally:
        ws.close()


def rest_codes(stack: Any, user: str, token: str) -> list[int]:
    """errCode of one cheap call on each REST blueprint that takes a user's token."""
    calls: dict[str, dict[str, Any]] = {
        "/user/get_users_info": {"userIDs": [user]},
        "/group/get_full_join_group_ids": {"userID": user},
        "/third/fcm_update_token": {"platformID": 2, "fcmToken": "fcm-token", "account": user, "expireTime": 0},
    }
    return [int(rest(stack.gateway_port, path, body, token)["errCode"]) for path, body in calls.items()]


def assert_refused_everywhere(stack: Any, user: str, platform: int, token: str, code: int = KICKED) -> None:
    assert rest_codes(stack, user, token) == [code] * 3
    assert ws_refusal(stack, user, platform, token) == code


def assert_accepted_on_rest(stack: Any, user: str, token: str) -> None:
    assert rest_codes(stack, user, token) == [0] * 3


def test_a_kicked_token_is_refused_on_rest_and_websocket(stack: Any, uid: str) -> None:
    user = f"kick{uid}"
    old_token, new_token = mint_token(user, LINUX, ttl_seconds=3600), mint_token(user, LINUX)
    old = ImClient(stack.ws_url, user, LINUX, old_token)
    try:
        assert_accepted_on_rest(stack, user, old_token)
        new = ImClient(stack.ws_url, user, LINUX, new_token)  # policy 1: the same platform's older login goes
        old.next_notice(protocol.KICK_ONLINE_MSG, timeout=10)
        assert old.closed.wait(10)
        assert_refused_everywhere(stack, user, LINUX, old_token)
        assert_accepted_on_rest(stack, user, new_token)
        new.close()
    finally:
        old.close()


def test_a_force_logged_out_token_is_refused_on_rest_and_websocket(stack: Any, uid: str) -> None:
    user = f"flo{uid}"
    token = mint_token(user, WEB)  # issued in the same second as the force logout: revoked all the same
    admin = admin_token(stack.gateway_port)
    assert rest(stack.gateway_port, "/auth/force_logout", {"userID": user, "platformID": WEB}, admin)["errCode"] == 0
    assert_refused_everywhere(stack, user, WEB, token)
    time.sleep(0.01)
    assert_accepted_on_rest(stack, user, mint_token(user, WEB))  # a token issued afterwards works


def test_a_logged_out_token_is_refused_on_rest_and_websocket(stack: Any, uid: str) -> None:
    user = f"out{uid}"
    token = mint_token(user, LINUX)
    client = ImClient(stack.ws_url, user, LINUX, token)
    try:
        client.logout()  # raises unless answered with errCode 0
        assert client.closed.wait(10), "2003 closes the socket"
    finally:
        client.close()
    assert_refused_everywhere(stack, user, LINUX, token)


def admin_codes(stack: Any, token: str, uid: str) -> dict[str, int]:
    """errCode of admin-only calls: minting a user token, registering a user."""
    port, user = stack.gateway_port, f"v{uid}"
    return {
        "get_user_token": rest(port, "/auth/get_user_token", {"platformID": WEB, "userID": user}, token)["errCode"],
        "user_register": rest(port, "/user/user_register", {"users": [{"userID": user}]}, token)["errCode"],
    }


def test_a_revoked_admin_token_is_refused_on_admin_routes(stack: Any, uid: str) -> None:
    port = stack.gateway_port
    leaked = rest(port, "/auth/get_admin_token", {"secret": os.environ["ADMIN_SECRET"], "userID": f"ops{uid}"})
    leaked_token = leaked["data"]["token"]
    assert admin_codes(stack, leaked_token, uid) == {"get_user_token": 0, "user_register": 0}
    other_admin = admin_token(port)
    body = {"userID": f"ops{uid}", "platformID": ADMIN_PLATFORM}
    assert rest(port, "/auth/force_logout", body, other_admin)["errCode"] == 0
    assert admin_codes(stack, leaked_token, uid) == {"get_user_token": KICKED, "user_register": KICKED}
    assert ws_refusal(stack, f"ops{uid}", ADMIN_PLATFORM, leaked_token) == KICKED
    # other admins, and the same admin's tokens issued afterwards, keep working
    assert admin_codes(stack, other_admin, uid) == {"get_user_token": 0, "user_register": 0}
    time.sleep(0.01)
    fresh = rest(port, "/auth/get_admin_token", {"secret": os.environ["ADMIN_SECRET"], "userID": f"ops{uid}"})
    assert admin_codes(stack, fresh["data"]["token"], uid) == {"get_user_token": 0, "user_register": 0}


def test_a_user_key_token_claiming_admin_is_refused_on_admin_routes(stack: Any, uid: str) -> None:
    claims = {"userID": "imAdmin", "platformID": ADMIN_PLATFORM, "exp": int(time.time()) + 600, "admin": True}
    forged = jwt.encode(claims, os.environ["TOKEN_SECRET"], algorithm="HS256")
    assert admin_codes(stack, forged, uid) == {"get_user_token": 1502, "user_register": 1502}
    # and the admin key without the admin claim makes no token at all
    user = f"u{uid}"
    claims = {"userID": user, "platformID": LINUX, "exp": int(time.time()) + 600}
    assert_refused_everywhere(stack, user, LINUX, jwt.encode(claims, secrets().admin_token_key), code=1502)


def test_a_socket_is_closed_when_its_token_expires(stack: Any, uid: str) -> None:
    user = f"exp{uid}"
    token = mint_token(user, LINUX, ttl_seconds=3)
    ws = websocket.create_connection(connect_url(stack.ws_url, user, LINUX, token), timeout=10)
    try:
        started = time.monotonic()
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            assert opcode != websocket.ABNF.OPCODE_BINARY, "no frame (no 2002 kick) before the close"
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
        assert time.monotonic() - started < 8
        assert int.from_bytes(data[:2], "big") == 1008  # policy violation, as a refused login
    finally:
        ws.close()
    assert ws_refusal(stack, user, LINUX, token) == 1501  # the client's reconnect learns why


# --- secrets at start ----------------------------------------------------------------------------


def app_env(stack: Any, data_dir: Path, **values: str) -> dict[str, str]:
    env = {k: v for k, v in stack.env.items() if k not in SECRET_VARS}
    return {**env, "APP_DATA_DIR": str(data_dir), **values}


def run_app(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    ("secrets", "missing"),
    [
        ({}, "TOKEN_SECRET is not set"),
        (
            {"TOKEN_SECRET": "short", "ADMIN_SECRET": "test-admin-secret-0123456789abcdef0123"},
            "TOKEN_SECRET is shorter",
        ),
        (
            {"TOKEN_SECRET": "test-token-secret-0123456789abcdef0123", "ADMIN_SECRET": "x" * 31},
            "ADMIN_SECRET is shorter",
        ),
    ],
)
def test_gateway_and_token_command_refuse_to_start_without_secrets(
    stack: Any, tmp_path: Path, secrets: dict[str, str], missing: str
) -> None:
    env = app_env(stack, tmp_path, GATEWAY_PORT=str(embedded.free_port()), **secrets)
    for args in (["gateway"], ["token", "alice", "5"]):
        done = run_app(env, *args)
        assert done.returncode != 0, f"{args} started: {done.stdout} {done.stderr}"
        assert missing in done.stderr and "APP_ENV=development" in done.stderr, done.stderr
        assert done.stdout == ""
    assert not (tmp_path / "secrets.env").exists()


def test_development_mode_starts_and_the_token_command_finds_up_secrets(stack: Any, tmp_path: Path) -> None:
    port = embedded.free_port()
    env = app_env(stack, tmp_path, APP_ENV="development", GATEWAY_PORT=str(port), GATEWAY_NODE_ID=f"gw-dev-{port}")
    gateway = subprocess.Popen(
        [sys.executable, "-m", "app", "gateway"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and gateway.poll() is None:
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.2)
        assert gateway.poll() is None, gateway.stderr.read().decode() if gateway.stderr else ""
        # its generated secrets are private, and `python -m app token` (production mode) finds them there
        path = tmp_path / "secrets.env"
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        done = run_app(app_env(stack, tmp_path), "token", "alice", str(LINUX))
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        file_secret = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        claims = parse_token(token, secret=file_secret["TOKEN_SECRET"])
        assert (claims.user_id, claims.platform_id) == ("alice", LINUX)
        client = ImClient(f"ws://127.0.0.1:{port}", "alice", LINUX, token)  # the dev gateway accepts it
        try:
            assert client.newest_seqs() == {}
        finally:
            client.close()
    finally:
        gateway.send_signal(signal.SIGTERM)
        try:
            gateway.wait(timeout=20)
        except subprocess.TimeoutExpired:
            gateway.kill()
            gateway.wait()

"""OpenIM's official JS SDK doing the message operations against our gateway (tests/interop/msg_ops.mjs):
revokeMessage, deleteMessage, markConversationMessageAsRead, deleteConversationAndDeleteAllMsg; then the
server's state checked from a websocket client of ours."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from app.core.constants import WEB
from app.core.conversation import single_conversation_id
from tests.integration.helpers import login
from tests.interop.test_openim_js_sdk import HERE, NODE, api, needs_node, sdk_installed  # noqa: F401
from tests.stack import Stack

SCENARIO_TIMEOUT = 240


def run_msg_ops(env: dict[str, str], log_path: Path) -> list[dict[str, Any]]:
    """Run msg_ops.mjs to its end; its events, one JSON object per stdout line (stderr to log_path)."""
    assert NODE is not None
    with open(log_path, "wb") as stderr:
        done = subprocess.run(
            [NODE, str(HERE / "msg_ops.mjs")],
            cwd=HERE,
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            timeout=SCENARIO_TIMEOUT,
            check=False,
        )
    log_path.with_suffix(".jsonl").write_text(done.stdout)
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


@needs_node
def test_js_sdk_revokes_deletes_reads_and_clears(sdk_installed: Path, stack: Stack, uid: str) -> None:  # noqa: F811
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    admin = api(stack.gateway_port, "/auth/get_admin_token", {"secret": stack.env["ADMIN_SECRET"], "userID": "imAdmin"})
    token = {
        u: api(stack.gateway_port, "/auth/get_user_token", {"platformID": WEB, "userID": u}, admin["token"])["token"]
        for u in (alice, bob)
    }
    env = {
        "OPENIM_A_USER": alice,
        "OPENIM_A_TOKEN": token[alice],
        "OPENIM_B_USER": bob,
        "OPENIM_B_TOKEN": token[bob],
        "OPENIM_WS": stack.ws_url,
        "OPENIM_API": f"http://127.0.0.1:{stack.gateway_port}",
        "OPENIM_PLATFORM": str(WEB),
    }
    events = run_msg_ops(env, stack.log_dir / f"js-sdk-msg-ops-{uid}.log")
    errors = [e for e in events if e["ev"] == "error"]
    assert not errors, errors
    assert events[-1] == {"ev": "done", "ok": True}

    sent = [e for e in events if e["ev"] == "sent"]
    assert len(sent) == 3  # (their seqs reach the SDK with its own pushes, after the answer)
    revoked = [e["data"] for e in events if e["ev"] == "revoked" and e["user"] == "B"]
    assert revoked and revoked[0]["clientMsgID"] == sent[0]["clientMsgID"]
    assert revoked[0]["revokerID"] == alice
    receipts = [r for e in events if e["ev"] == "receipt" and e["user"] == "A" for r in e["receipts"]]
    assert receipts and receipts[0]["userID"] == bob
    states = {e["label"]: e for e in events if e["ev"] == "state"}
    assert states["after-read"]["unreadCount"] == 0

    def content(msg: dict[str, Any]) -> str:
        return base64.b64decode(msg.get("content", "") or "").decode()

    with login(stack, bob) as b:
        pulled = b.pull_range(conv, 1, 4)["Msgs"]
        assert pulled[0]["contentType"] == 2101 and "revoke me" not in content(pulled[0])
        assert json.loads(json.loads(content(pulled[0]))["detail"])["revokerID"] == alice
        assert (pulled[1].get("status"), content(pulled[1])) == (4, "")  # deleted for bob
        assert json.loads(content(pulled[2]))["content"] == "keep me"
        assert b.read_state([conv])[conv]["hasReadSeq"] >= 3
    with login(stack, alice) as a:
        assert a.pull_range(conv, 1, 4)["Msgs"] == []  # cleared for alice

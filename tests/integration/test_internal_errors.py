"""A failure inside the server is answered, never a dropped socket or an HTML page: every REST route
answers OpenIM's envelope, a SendMsg the broker cannot take in time is answered "send it again" on a
socket that stays open, and REST hand-offs to the push stage are journaled like the pipeline's own."""

from __future__ import annotations

import socket
import threading
from typing import Any

import requests

from app.cli.client import ClientError, ImClient
from app.core.constants import HAS_READ_RECEIPT, LINUX
from app.core.conversation import single_conversation_id
from app.core.errors import SERVER_INTERNAL
from app.ops import embedded
from app.pipeline import journal
from app.services.auth import ADMIN_PLATFORM, mint_token
from tests.integration.helpers import eventually, login, rest

ENVELOPE = {"errCode", "errMsg", "errDlt", "data"}


class SilentServer:
    """Accepts TCP connections and never answers: a broker on which every publish stalls."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept_forever, daemon=True).start()

    def _accept_forever(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def post(port: int, path: str, body: object, token: str) -> requests.Response:
    headers = {"operationID": "test-op", "token": token}
    return requests.post(f"http://127.0.0.1:{port}{path}", json=body, headers=headers, timeout=30)


def test_every_blueprint_answers_the_envelope_on_an_internal_error(stack: Any, uid: str) -> None:
    # every route checks its token's revocation in Redis: with no Redis, each one fails inside
    node = stack.start_gateway("gw-no-redis", {"REDIS_URL": f"redis://127.0.0.1:{embedded.free_port()}/0"})
    try:
        user, admin = mint_token(f"u{uid}", LINUX), mint_token("imAdmin", ADMIN_PLATFORM, admin=True)
        calls = {
            "/auth/get_user_token": ({"platformID": LINUX, "userID": f"u{uid}"}, admin),  # admin
            "/third/fcm_update_token": ({"platformID": 2, "fcmToken": "t", "account": f"u{uid}"}, user),  # third
            "/user/get_users_info": ({"userIDs": [f"u{uid}"]}, user),  # openim
            "/group/get_groups_info": ({"groupIDs": [f"g{uid}"]}, user),  # groups
        }
        for path, (body, token) in calls.items():
            answer = post(node.port, path, body, token)
            assert answer.status_code == 200, (path, answer.text[:200])
            assert set(answer.json()) == ENVELOPE, path
            assert answer.json()["errCode"] == SERVER_INTERNAL, (path, answer.json())
    finally:
        stack.terminate("gw-no-redis")


def test_an_unknown_path_or_method_answers_the_envelope(stack: Any) -> None:
    missing = requests.post(f"http://127.0.0.1:{stack.gateway_port}/no/such/route", json={}, timeout=10)
    assert missing.status_code == 404
    assert missing.json() == {"errCode": 404, "errMsg": "Not Found", "errDlt": "", "data": None}
    wrong_method = requests.get(f"http://127.0.0.1:{stack.gateway_port}/auth/get_user_token", timeout=10)
    assert wrong_method.status_code == 405 and wrong_method.json()["errCode"] == 405


def test_a_publish_past_its_deadline_is_answered_and_the_socket_stays_open(stack: Any, uid: str) -> None:
    broker = SilentServer()
    env = {"BROKER_URL": f"redis://127.0.0.1:{broker.port}/0", "GATEWAY_PUBLISH_TIMEOUT_SECONDS": "1"}
    node = stack.start_gateway("gw-stalled-broker", env)
    client = ImClient(node.ws_url, f"s{uid}", LINUX, mint_token(f"s{uid}", LINUX))
    try:
        try:
            client.send_text(f"p{uid}", "stuck")
            raise AssertionError("a publish that never finished was acknowledged")
        except ClientError as err:
            assert err.code == SERVER_INTERNAL and "send it again" in err.message
        assert not client.closed.is_set()
        assert client.newest_seqs() == {}  # the same socket is still served
    finally:
        client.close()
        stack.terminate("gw-stalled-broker")
        broker.close()


def test_a_read_receipt_sent_through_rest_is_journaled_until_pushed(stack: Any, uid: str) -> None:
    reader_id, peer_id = f"r{uid}", f"w{uid}"
    reader, peer = login(stack, reader_id), login(stack, peer_id)
    conv = single_conversation_id(reader_id, peer_id)

    def journaled() -> list[Any]:
        """The push stage's journaled hand-offs holding a read receipt of this conversation."""
        return [
            args
            for _, args in journal.entries("push")
            if any(m["content_type"] == HAS_READ_RECEIPT for m in args[0].get(conv, []))
        ]

    pushed: list[dict[str, Any]] = []  # the peer's own message comes back to it too (senderSync)

    def receipt_pushed() -> bool:
        pushed.extend(peer.pushed_msgs(1, timeout=1))
        return any(m["contentType"] == HAS_READ_RECEIPT and m["sendID"] == reader_id for m in pushed)

    try:
        peer.send_text(reader_id, "read me")
        assert len(reader.pushed_msgs(1, timeout=20)) == 1
        # killed idle: with that push's journal entry still there (it is removed a moment after the
        # push), it would wait for the sweeper's visibility timeout and count as work left in later tests
        assert eventually(lambda: not journal.entries("push"), timeout=10)
        stack.kill("push")  # the receipt's hand-off now waits in the queue, and in the journal
        try:
            body = {"userID": reader_id, "conversationID": conv, "hasReadSeq": 1}
            assert rest(stack.gateway_port, "/msg/mark_conversation_as_read", body, reader.token)["errCode"] == 0
            # answered once accepted (published to transfer): its hand-off to push comes a moment later
            assert eventually(lambda: len(journaled()) == 1, timeout=10)
        finally:
            stack.restart("push", ["worker", "push"], " ready.")
        assert eventually(receipt_pushed, timeout=30)
        assert eventually(lambda: not journaled(), timeout=10)
    finally:
        reader.close()
        peer.close()

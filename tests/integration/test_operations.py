"""Operations: readiness, metrics a short scenario moves, JSON logs, graceful shutdown, Flower."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from typing import Any

import requests
import websocket

from app.cli.client import ClientError, ImClient
from app.core.constants import LINUX
from app.core.conversation import single_conversation_id
from app.ops import embedded
from app.services.auth import mint_token
from app.store.redis.client import get_redis
from app.store.redis.keys import client_ack_key
from app.store.redis.online import get_online
from app.ws.acceptance import decode_ack
from tests.integration.helpers import eventually, login


def test_readyz_reports_each_dependency(stack: Any) -> None:
    answer = requests.get(f"http://127.0.0.1:{stack.gateway_port}/readyz", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["checks"] == {"accepting": True, "push_subscription": True, "redis": True, "mongodb": True}


def test_a_short_scenario_moves_every_stages_counters(stack: Any, uid: str) -> None:
    names = {
        ("gateway", "msg_accepted_total"),
        ("gateway", "send_msg_seconds_count"),
        ("gateway", "gateway_flush_messages_sum"),  # the five SendMsgs, in however many flushes
        ("gateway", "msg_online_push_success_total"),
        ("transfer", "seq_allocated_total"),
        ("persist", "msg_insert_mongo_success_total"),
    }
    flushes = ("gateway", "gateway_flush_seconds_count")
    before = {key: stack.metric(*key) for key in names | {flushes}}
    alice, bob = login(stack, f"a{uid}"), login(stack, f"b{uid}")
    try:
        for i in range(5):
            alice.send_text(f"b{uid}", f"m{i}")
        assert len(bob.pushed_msgs(5, timeout=20)) == 5
        conv = single_conversation_id(f"a{uid}", f"b{uid}")
        persisted = ("persist", "msg_insert_mongo_success_total")
        assert eventually(lambda: stack.metric(*persisted) >= before[persisted] + 5)
        pushed = ("gateway", "msg_online_push_success_total")  # per message and socket: bob's and alice's echoes
        for key in names - {pushed}:
            assert stack.metric(*key) >= before[key] + 5, key
        assert stack.metric(*pushed) >= before[pushed] + 10  # however many frames (transfer runs) carried them
        assert before[flushes] + 1 <= stack.metric(*flushes) <= before[flushes] + 5
        assert conv in bob.newest_seqs()
        text = requests.get(f"http://127.0.0.1:{stack.gateway_port}/metrics", timeout=5).text
        assert "online_user_num" in text and "gateway_connections" in text
        assert 'queue_depth{queue="transfer.0"}' in text and 'queue_depth{queue="persist"}' in text
        # every worker times its tasks
        assert stack.metric("transfer", 'task_seconds_count{task="transfer.batch"}') >= 1
        assert stack.metric("persist", 'task_seconds_count{task="persist.batch"}') >= 1
    finally:
        alice.close()
        bob.close()


def test_logs_are_one_json_object_per_line_with_context(stack: Any, uid: str) -> None:
    client = login(stack, f"j{uid}")
    try:
        with_bad_op = client.request_raw(1003, {"recvID": ""})
        assert with_bad_op["errCode"] == 1001
    finally:
        client.close()

    def refusal() -> dict[str, Any] | None:
        for line in stack.log_text("gateway").splitlines():
            if line.startswith("{") and f"j{uid}" in line and '"errCode": 1001' in line:
                entry: dict[str, Any] = json.loads(line)
                return entry
        return None

    entry = eventually(refusal, timeout=10)
    assert entry is not None
    assert entry["level"] == "INFO" and entry["userID"] == f"j{uid}" and entry["operationID"]
    # every line of every process is JSON
    for name in ("gateway", "transfer", "persist", "push"):
        for line in stack.log_text(name).splitlines():
            if line.strip():
                json.loads(line)


def test_only_the_persist_worker_speaks_of_persist_merging(stack: Any) -> None:
    """The offline worker (threads pool) never receives persist.batch: no warning about its merging."""
    assert "offline" in stack.procs and stack.procs["offline"].poll() is None
    assert "ready." in stack.log_text("offline")
    assert "merges broker messages only on the solo pool" not in stack.log_text("offline")
    assert "merges broker messages only on the solo pool" not in stack.log_text("persist")


def test_sigterm_answers_what_was_taken_then_closes_sockets_going_away(stack: Any, uid: str) -> None:
    node = stack.start_gateway("gw-drain")
    sender_id, peer_id = f"s{uid}", f"p{uid}"
    sender = ImClient(node.ws_url, sender_id, LINUX, mint_token(sender_id, LINUX))
    watcher = websocket.create_connection(
        f"{node.ws_url}/?sendID=w{uid}&platformID={LINUX}&sdkType=json&token={mint_token(f'w{uid}', LINUX)}",
        timeout=10,
    )
    acked: list[str] = []
    refused: list[str] = []

    def keep_sending() -> None:
        for i in range(10_000):
            cid = f"{uid}-{i}"
            try:
                sender.send_text(peer_id, str(i), client_msg_id=cid)
                acked.append(cid)
            except (ClientError, TimeoutError, OSError, websocket.WebSocketException):
                refused.append(cid)
                return

    thread = threading.Thread(target=keep_sending)
    thread.start()
    assert eventually(lambda: len(acked) >= 50, timeout=30)
    assert sender_id in get_online([sender_id])
    stack.procs["gw-drain"].send_signal(signal.SIGTERM)
    assert stack.procs["gw-drain"].wait(timeout=30) == 0
    thread.join(30)
    sender.close()
    # the other clients were told the server is going away
    watcher.settimeout(5)
    opcode, data = watcher.recv_data(control_frame=True)
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(data[:2], "big") == 1001
    watcher.close()
    # nothing acknowledged was lost, and the node's online state went with it
    conv = single_conversation_id(sender_id, peer_id)
    # every answer given was confirmed before the node exited: a resend to another node is answered
    # without a second publish
    answers = [get_redis().get(client_ack_key(conv, cid)) for cid in acked]
    assert all(raw is not None and decode_ack(str(raw))[1] for raw in answers)
    reader = login(stack, peer_id)
    try:

        def stored() -> set[str]:
            newest = reader.newest_seqs().get(conv, 0)
            got: set[str] = set()
            for begin in range(1, newest + 1, 100):
                got |= {m["clientMsgID"] for m in reader.pull_range(conv, begin, min(newest, begin + 99))["Msgs"]}
            return got

        assert eventually(lambda: set(acked) <= stored(), timeout=60), set(acked) - stored()
    finally:
        reader.close()
    assert sender_id not in get_online([sender_id])
    assert "draining" in stack.log_text("gw-drain") and "stopped" in stack.log_text("gw-drain")


def test_flower_watches_the_configured_broker(stack: Any, infra: dict[str, str]) -> None:
    port = embedded.free_port()
    env = {**stack.env, "FLOWER_UNAUTHENTICATED_API": "true"}
    log_path = stack.log_path("flower")
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "app.celery_app", "flower", f"--port={port}", "--address=127.0.0.1"],
            cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:

        def workers() -> dict[str, Any]:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/api/workers?refresh=1", timeout=10)
            except requests.RequestException:
                return {}
            return answer.json() if answer.ok else {}

        seen = eventually(lambda: {n.split("-")[0] for n in workers()} >= {"transfer", "persist", "push"}, timeout=60)
        assert seen, f"flower saw {list(workers())}\n{log_path.read_text(errors='replace')[-2000:]}"
        assert requests.get(f"http://127.0.0.1:{port}/healthcheck", timeout=10).text == "OK"
    finally:
        proc.terminate()
        proc.wait(timeout=20)

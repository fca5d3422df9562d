"""The same single-chat path with RabbitMQ as the broker (publisher confirms, single-active-consumer shards)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from kombu.connection import Connection

from app.core.constants import WEB
from app.core.conversation import single_conversation_id
from app.store.mongo import client as mongo
from tests.conftest import AMQP_URL, WORK_DIR
from tests.integration.helpers import eventually, login
from tests.stack import ROOT, Stack

pytestmark = pytest.mark.rabbitmq


def rabbitmq_reachable() -> bool:
    try:
        with Connection(AMQP_URL, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


@pytest.fixture(scope="module")
def amqp_stack(infra: dict[str, str], provider: Any) -> Iterator[Stack]:
    if not rabbitmq_reachable():
        pytest.skip(f"no RabbitMQ answers at {AMQP_URL}")
    env = {**infra, "BROKER_URL": AMQP_URL, "OFFLINE_PUSH_URL": provider.url}
    # Leftovers of an earlier, interrupted run must not be replayed into this one.
    subprocess.run(
        [sys.executable, "-m", "celery", "-A", "app.celery_app", "purge", "-f"],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
        check=False,
    )
    with Stack(WORK_DIR / "stack-amqp", env) as running:
        yield running.start()


def test_messages_flow_in_order_over_rabbitmq(amqp_stack: Stack, provider: Any, uid: str) -> None:
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    conv = single_conversation_id(alice, bob)
    a = login(amqp_stack, alice)
    b = login(amqp_stack, bob, WEB)
    try:
        sent = [a.send_text(bob, f"over amqp {i}")["clientMsgID"] for i in range(60)]
        pushed = b.pushed_msgs(60, timeout=60)
        assert [int(m["seq"]) for m in pushed] == list(range(1, 61))
        assert [m["clientMsgID"] for m in pushed] == sent
        assert b.newest_seqs()[conv] == 60
        assert [m["clientMsgID"] for m in b.pull_range(conv, 1, 60)["Msgs"]] == sent

        def persisted() -> int:
            doc = mongo.get_db().msg.find_one({"doc_id": f"{conv}:0"})
            return sum(1 for slot in doc["msgs"] if slot["msg"]) if doc else 0

        assert eventually(lambda: persisted() == 60)

        offline_cid = a.send_text(carol, "carol is offline")["clientMsgID"]
        posts = provider.wait_for_user(carol, 1)
        assert [m["clientMsgID"] for post in posts for m in post["msgs"]] == [offline_cid]
    finally:
        a.close()
        b.close()

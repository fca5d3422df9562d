"""Many nodes on RabbitMQ: three gateway nodes and three transfer workers in one stack.

Transfer worker a consumes shards 0 and 1, b shards 2 and 3, and c subscribes to all four after
them: RabbitMQ's single-active-consumer makes c the standby of every shard. Users connect to
different gateway nodes; kicks and force-logouts cross nodes; a worker killed mid-stream hands its
shards to the standby with nothing lost or reordered; a gateway drained with SIGTERM mid-stream sends
its clients to the other nodes, where they resend what was not answered.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from app.cli.client import ImClient, text_of
from app.core import protocol
from app.core.constants import IOS, LINUX, WEB
from app.core.conversation import shard_of, single_conversation_id
from app.services.auth import mint_token
from tests.conftest import AMQP_URL, WORK_DIR
from tests.integration.helpers import admin_token, eventually
from tests.integration.test_rabbitmq_broker import rabbitmq_reachable
from tests.integration.test_transfer_reliability import Senders, assert_one_seq_each_in_order
from tests.stack import GatewayNode, Stack

SHARDS = 4  # the tests' TRANSFER_SHARDS


class Nodes:
    def __init__(self, stack: Stack, gateways: list[GatewayNode]) -> None:
        self.stack = stack
        self.gateways = gateways

    def client(self, node: int, user: str, platform: int = LINUX, token: str | None = None) -> ImClient:
        return ImClient(self.gateways[node].ws_url, user, platform, token or mint_token(user, platform))


@pytest.fixture(scope="module")
def nodes(infra: dict[str, str]) -> Iterator[Nodes]:
    assert rabbitmq_reachable(), f"no RabbitMQ answers at {AMQP_URL}"
    stack = Stack(WORK_DIR / f"stack-many-{uuid.uuid4().hex[:6]}", {**infra, "BROKER_URL": AMQP_URL})
    with stack:
        stack.overrides["transfer"] = {"TRANSFER_WORKER_SHARDS": "0,1"}  # transfer a
        stack.start()
        stack.start_worker("transfer_b", "transfer", env={"TRANSFER_WORKER_SHARDS": "2,3"})
        stack.start_worker("transfer_c", "transfer")  # all shards, subscribed last: the standby
        first = GatewayNode("gateway", stack.gateway_port, stack.node_id)
        yield Nodes(stack, [first, stack.start_gateway("gw2"), stack.start_gateway("gw3")])


def received(client: ImClient) -> list[str]:
    """The first message pushed to `client` from someone else (a sender's own is pushed back to it too)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for msg in client.pushed_msgs(1, timeout=max(0.1, deadline - time.monotonic())):
            if msg["sendID"] != client.user_id:
                return [text_of(msg)]
    return []


def test_users_on_three_nodes_chat(nodes: Nodes) -> None:
    tag = uuid.uuid4().hex[:6]
    a, b, c = f"a{tag}", f"b{tag}", f"c{tag}"
    with nodes.client(0, a) as ca, nodes.client(1, b) as cb, nodes.client(2, c) as cc:
        ca.send_text(b, "a to b")
        cb.send_text(c, "b to c")
        cc.send_text(a, "c to a")
        assert received(cb) == ["a to b"]
        assert received(cc) == ["b to c"]
        assert received(ca) == ["c to a"]


def test_kicks_and_force_logouts_cross_nodes(nodes: Nodes) -> None:
    tag = uuid.uuid4().hex[:6]
    user, other = f"k{tag}", f"f{tag}"
    with nodes.client(0, user, IOS) as old:
        assert old.newest_seqs() == {}
        with nodes.client(2, user, IOS) as new:  # policy 1: the same platform on node 3 kicks node 1's
            assert old.next_notice(protocol.KICK_ONLINE_MSG, timeout=10)["errCode"] == 0
            assert old.closed.wait(10)
            assert new.newest_seqs() == {}
    with nodes.client(2, other, WEB) as held:
        assert held.newest_seqs() == {}
        port = nodes.gateways[1].port  # the admin call goes to node 2; the login is on node 3
        answer = requests.post(
            f"http://127.0.0.1:{port}/auth/force_logout",
            json={"userID": other, "platformID": WEB},
            headers={"token": admin_token(port)},
            timeout=10,
        ).json()
        assert answer["errCode"] == 0
        held.next_notice(protocol.KICK_ONLINE_MSG, timeout=10)
        assert held.closed.wait(10)


def one_pair_per_shard(tag: str) -> list[tuple[str, str]]:
    by_shard: dict[int, tuple[str, str]] = {}
    for i in itertools.count():
        pair = (f"ms{tag}-{i}", f"mr{tag}-{i}")
        by_shard.setdefault(shard_of(single_conversation_id(*pair), SHARDS), pair)
        if len(by_shard) == SHARDS:
            return [by_shard[k] for k in range(SHARDS)]
    raise AssertionError("unreachable")


def test_a_killed_transfer_worker_hands_its_shards_to_the_standby(nodes: Nodes) -> None:
    stack = nodes.stack
    senders = Senders(stack, count=SHARDS, per_sender=150, pause=0.005, pairs=one_pair_per_shard(uuid.uuid4().hex[:6]))
    senders.start()
    senders.wait_progress(0.3)
    stack.kill("transfer")  # SIGKILL of the worker active on shards 0 and 1
    senders.join()
    assert_one_seq_each_in_order(stack, senders)
    # RabbitMQ made the standby the shards' active consumer: it ran transfer batches
    assert stack.metric("transfer_c", 'task_seconds_count{task="transfer.batch"}') >= 1, "the standby never consumed"


class MovingSender:
    """A client that sends numbered messages and, when its gateway goes away, reconnects to the next
    node and resends the same clientMsgID (what an OpenIM SDK does)."""

    def __init__(self, nodes: Nodes, sender: str, receiver: str, count: int, start_node: int) -> None:
        self.nodes, self.sender, self.receiver, self.count = nodes, sender, receiver, count
        self.node = start_node
        self.acked: list[str] = []
        self.moves = 0
        self.thread = threading.Thread(target=self.run)

    def run(self) -> None:
        client = self.nodes.client(self.node, self.sender)
        try:
            for i in range(self.count):
                cid = f"{self.sender}-{i}"
                for _attempt in range(50):
                    try:
                        client.send_text(self.receiver, str(i), client_msg_id=cid)
                        break
                    except Exception:  # closed by the drain, refused, or no answer: move on
                        client.close()
                        self.node = (self.node + 1) % len(self.nodes.gateways)
                        self.moves += 1
                        time.sleep(0.2)
                        try:
                            client = self.nodes.client(self.node, self.sender)
                        except Exception:
                            continue  # that node is the one going away: try the next
                else:
                    raise AssertionError(f"{cid} never accepted")
                self.acked.append(cid)
                time.sleep(0.005)
        finally:
            client.close()


def test_a_gateway_drained_with_sigterm_sends_its_clients_to_the_others(nodes: Nodes) -> None:
    stack, tag = nodes.stack, uuid.uuid4().hex[:6]
    movers = [MovingSender(nodes, f"d{tag}-{i}", f"dr{tag}-{i}", 200, start_node=2) for i in range(4)]
    for mover in movers:
        mover.thread.start()
    assert eventually(lambda: sum(len(m.acked) for m in movers) >= 200, timeout=120)
    stack.terminate("gw3")  # SIGTERM: answer what it took, close the sockets with 1001, exit
    assert stack.procs["gw3"].returncode == 0
    for mover in movers:
        mover.thread.join(180)
        assert not mover.thread.is_alive()
    assert all(m.moves >= 1 for m in movers), "every client was on the drained node"
    # the same audit as a worker kill: one seq each, in acceptance order, all in MongoDB
    audit = Senders(stack, count=0, per_sender=200, pairs=[(m.sender, m.receiver) for m in movers])
    for mover in movers:
        audit.acked[single_conversation_id(mover.sender, mover.receiver)] = mover.acked
    assert_one_seq_each_in_order(stack, audit)


def test_every_node_still_serves(nodes: Nodes) -> None:
    """After the kill and the drain: the two gateways left and the workers left still carry traffic."""
    tag = uuid.uuid4().hex[:6]
    with nodes.client(0, f"x{tag}") as x, nodes.client(1, f"y{tag}") as y:
        x.send_text(f"y{tag}", "still here")
        assert received(y) == ["still here"]
    assert nodes.stack.alive()["gateway"] and nodes.stack.alive()["gw2"] and nodes.stack.alive()["transfer_c"]

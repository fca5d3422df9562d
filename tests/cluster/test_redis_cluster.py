"""The stack on a real Redis Cluster (three masters, three replicas, started by the tests).

- a master fails over to its replica mid-stream (CLUSTER FAILOVER, as an operator moves a master
  off a machine), and another master is killed mid-stream (SIGKILL; its replica is promoted): every
  acknowledged message keeps one seq, in order, and reaches MongoDB (P1-P3);
- the single-chat, group, read-side and transfer-reliability scenarios pass with the data on a
  cluster: run as their own pytest session with TEST_REDIS_CLUSTER=1 (tests/conftest.py), which keeps
  that session's data on a cluster of its own and its brokers on a redis-server of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.conversation import single_conversation_id
from app.store.redis.keys import malloc_seq_key, transfer_shards_key
from tests.conftest import AMQP_URL, TEST_REDIS_DB, WORK_DIR
from tests.integration.helpers import eventually
from tests.integration.test_rabbitmq_broker import rabbitmq_reachable
from tests.integration.test_transfer_reliability import Senders, assert_one_seq_each_in_order
from tests.redis_cluster import LocalCluster
from tests.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SCENARIOS = [
    "tests/integration/test_acceptance.py",
    "tests/integration/test_single_chat.py",
    "tests/integration/test_groups.py",
    "tests/integration/test_read_side.py",
    "tests/integration/test_transfer_reliability.py",
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(WORK_DIR / "redis-cluster-failover") as running:
        yield running.start()


@pytest.fixture
def cluster_stack(infra: dict[str, str], cluster: LocalCluster) -> Iterator[Stack]:
    """The production shape: data on the cluster, the broker on RabbitMQ."""
    assert rabbitmq_reachable(), f"no RabbitMQ answers at {AMQP_URL}"
    env = {**infra, "REDIS_URL": cluster.url, "REDIS_CLUSTER": "1", "BROKER_URL": AMQP_URL}
    with Stack(WORK_DIR / "stack-cluster", env) as running:
        yield running.start()


def test_master_failover_mid_stream_loses_nothing_acknowledged(cluster: LocalCluster, cluster_stack: Stack) -> None:
    senders = Senders(cluster_stack, count=3, per_sender=200, pause=0.005)
    first = next(iter(senders.acked))
    master = cluster.master_of(malloc_seq_key(first))
    replica = cluster.replica_of(master)
    senders.start()
    senders.wait_progress(0.3)
    cluster.failover(replica)
    assert cluster.master_of(malloc_seq_key(first)) == replica
    senders.join()
    assert_one_seq_each_in_order(cluster_stack, senders)
    assert single_conversation_id(*senders.pairs[0]) == first
    # the start-up checks read the cluster too: TRANSFER_SHARDS recorded there, nothing unreadable
    assert cluster.client().get(transfer_shards_key()) == "4"
    for name in ("gateway", "transfer", "persist", "push", "offline"):
        assert "could not read" not in cluster_stack.log_text(name), cluster_stack.tail(name)


def test_a_master_killed_mid_stream_loses_nothing_acknowledged(cluster: LocalCluster, cluster_stack: Stack) -> None:
    """SIGKILL of a master: its replica is promoted after the cluster's node timeout (2 s here); the
    workers retry through the gap. (Writes not yet replicated when it died would be lost: see README.)"""
    senders = Senders(cluster_stack, count=3, per_sender=300, pause=0.002)
    master = cluster.master_of(malloc_seq_key(next(iter(senders.acked))))
    replica = cluster.replica_of(master)
    senders.start()
    senders.wait_progress(0.3)
    cluster.procs[master].kill()
    assert eventually(lambda: cluster.role(replica) == "master", timeout=60), "the replica was not promoted"
    senders.join(300)
    assert_one_seq_each_in_order(cluster_stack, senders)


def test_the_scenarios_pass_with_the_data_on_a_redis_cluster() -> None:
    """A pytest session of their own (own cluster, own brokers, own MongoDB), so this run's shared
    stack is untouched."""
    env = {**os.environ, "TEST_REDIS_CLUSTER": "1", "TEST_REDIS_DB": str(TEST_REDIS_DB)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *SCENARIOS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]

"""The fault suite (issue 7): the whole stack as separate processes under a steady load from real
websocket clients, broken on purpose, then audited (P1-P5 and catching up).

Each broker gets one stack with its own Redis, broker and SecantusDB, so killing or restarting them
touches nothing else. Scenarios run one after another on it; every scenario puts back what it broke.
The summary table is printed at the end of the run (tests/faults/conftest.py); the tests are in
test_brokers.py, one stack per broker (a module fixture parametrized by broker).
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from app.cli.client import ImClient
from app.ops import embedded
from app.services.auth import mint_token
from tests.conftest import AMQP_URL, WORK_DIR
from tests.faults.load import Load, audit
from tests.integration.helpers import admin_token, eventually, rest
from tests.integration.test_rabbitmq_broker import rabbitmq_reachable
from tests.stack import Stack

RESULTS: list[list[str]] = []


@dataclass
class FaultStack:
    broker: str
    stack: Stack
    redis_port: int
    redis_proc: subprocess.Popen[bytes]
    mongo_port: int
    mongo_proc: subprocess.Popen[bytes]
    broker_proc: subprocess.Popen[bytes] | None
    node_b: Any
    broker_port: int = 0  # the Redis broker's port (0 on RabbitMQ)

    @property
    def urls(self) -> list[str]:
        return [self.stack.ws_url, self.node_b.ws_url]

    @property
    def mongo_url(self) -> str:
        return f"mongodb://127.0.0.1:{self.mongo_port}/openim_faults?retryWrites=false"

    def reader(self, user: str) -> ImClient:
        return ImClient(self.stack.ws_url, user, 7, mint_token(user, 7), timeout=30)


def fault_stack(broker: str) -> Iterator[FaultStack]:
    """The stack of one broker's module (a module-scoped fixture yields from this)."""
    if broker == "rabbitmq" and not rabbitmq_reachable():
        pytest.fail(f"the fault suite needs RabbitMQ at {AMQP_URL}")
    work = WORK_DIR / f"faults-{broker}"
    redis_port, mongo_port = embedded.free_port(), embedded.free_port()
    redis_proc = embedded.start_redis(redis_port, work / "redis", work / "redis.log")
    mongo_proc = embedded.start_mongo(mongo_port, work / "mongo", work / "mongo.log")
    broker_proc = None
    broker_port = 0
    if broker == "redis":
        broker_port = embedded.free_port()
        broker_proc = embedded.start_redis(broker_port, work / "broker", work / "broker.log", durable=True)
        broker_url = f"redis://127.0.0.1:{broker_port}/0"
    else:
        broker_url = AMQP_URL
    env = {
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        "MONGO_URL": f"mongodb://127.0.0.1:{mongo_port}/openim_faults?retryWrites=false",
        "BROKER_URL": broker_url,
        "TRANSFER_LEASE_SECONDS": "3",
        "BROKER_VISIBILITY_TIMEOUT": "10",
        "GATEWAY_RATE_LIMIT": "0",
    }
    stack = Stack(work / "stack", env)
    if os.environ.get("FAULT_DEBUG"):
        stack.overrides["persist"] = {"LOG_LEVEL": "DEBUG"}
        stack.overrides["transfer"] = {"LOG_LEVEL": "DEBUG"}
    stack.start()
    node_b = stack.start_gateway("gw-b")
    running = FaultStack(
        broker, stack, redis_port, redis_proc, mongo_port, mongo_proc, broker_proc, node_b, broker_port
    )
    try:
        yield running
    finally:
        stack.stop()
        procs = (running.redis_proc, running.mongo_proc, running.broker_proc)
        embedded.stop_processes([proc for proc in procs if proc is not None], timeout=30)


# --- the faults ------------------------------------------------------------------------------


def kill_and_restart(kind: str) -> Callable[[FaultStack], None]:
    def fault(f: FaultStack) -> None:
        f.stack.kill(kind)
        time.sleep(1)
        f.stack.restart(kind, ["worker", kind], " ready.")

    return fault


def redis_loses_everything(f: FaultStack) -> None:
    f.redis_proc.kill()
    f.redis_proc.wait(timeout=10)
    work = WORK_DIR / f"faults-{f.broker}"
    f.redis_proc = embedded.start_redis(f.redis_port, work / "redis", work / "redis.log")


def mongo_down_15s(f: FaultStack) -> None:
    f.mongo_proc.terminate()
    f.mongo_proc.wait(timeout=30)
    time.sleep(15)
    work = WORK_DIR / f"faults-{f.broker}"
    f.mongo_proc = embedded.start_mongo(f.mongo_port, work / "mongo", work / "mongo.log")


def broker_restarts(f: FaultStack) -> None:
    """The broker restarts: RabbitMQ with durable queues and persistent messages, or the Redis
    broker with its append-only file (fsync on every write), on the same port and data."""
    if f.broker == "rabbitmq":
        subprocess.run(["rabbitmqctl", "stop_app"], check=True, capture_output=True, timeout=120)
        time.sleep(2)
        subprocess.run(["rabbitmqctl", "start_app"], check=True, capture_output=True, timeout=120)
        return
    assert f.broker_proc is not None
    f.broker_proc.terminate()
    f.broker_proc.wait(timeout=30)
    time.sleep(2)
    work = WORK_DIR / f"faults-{f.broker}"
    f.broker_proc = embedded.start_redis(f.broker_port, work / "broker", work / "broker.log", durable=True)


def gateway_node_dies(f: FaultStack) -> None:
    f.stack.kill("gw-b")  # its clients reconnect to the other node and catch up by pulling
    time.sleep(3)
    f.stack.restart("gw-b", ["gateway"], "listening on")


SCENARIOS: dict[str, Callable[[FaultStack], None]] = {
    "transfer worker SIGKILL": kill_and_restart("transfer"),
    "persist worker SIGKILL": kill_and_restart("persist"),
    "push worker SIGKILL": kill_and_restart("push"),
    "Redis restart, data lost": redis_loses_everything,
    "MongoDB down 15 s": mongo_down_15s,
    "broker restart": broker_restarts,
    "gateway node killed": gateway_node_dies,
}


def run_scenario(faults: FaultStack, scenario: str) -> None:
    """Load, break, recover, audit; one row of the table."""
    tag = uuid.uuid4().hex[:6]
    group_id = f"fg{tag}"
    members = [f"gm{tag}{i}" for i in range(5)]
    admin = admin_token(faults.stack.gateway_port)
    created = rest(
        faults.stack.gateway_port,
        "/group/create_group",
        {"ownerUserID": members[0], "memberUserIDs": members[1:], "groupInfo": {"groupID": group_id}},
        admin,
    )
    assert created["errCode"] == 0, created
    load = Load(tag, faults.urls, singles=6, group_id=group_id, group_members=tuple(members))
    load.start()
    try:
        assert eventually(lambda: load.acked_count() >= 40, timeout=60), "the load never got going"
        started = time.monotonic()
        SCENARIOS[scenario](faults)
        after_fault = load.acked_count()
        assert eventually(lambda: load.acked_count() >= after_fault + 30, timeout=120), "no recovery"
        recovered = time.monotonic() - started
    finally:
        load.finish()
    try:
        result = audit(load, faults.mongo_url, faults.reader)
    finally:
        load.close()
    RESULTS.append(
        [
            scenario,
            faults.broker,
            str(result.acked),
            str(result.persisted),
            str(result.lost),
            str(result.duplicated),
            str(result.out_of_order),
            str(result.unreadable),
            str(result.missed_by_receivers),
            f"{recovered:.1f}",
        ]
    )
    assert result.clean, (result, result.details)

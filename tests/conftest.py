"""Real infrastructure for the tests: Redis, a MongoDB-wire server, the broker, and the stack's processes.

The machine's Redis (127.0.0.1:6379) is used when it answers, on a database of the tests' own;
otherwise an embedded redis-server is started. SecantusDB always runs on a free port with a
throw-away directory. The environment is set here, before any `app` module reads it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings as hypothesis_settings

from app.ops import embedded  # imports nothing that reads the configuration

# Property tests check what the code does, not how fast: hypothesis's 200 ms deadline per example
# failed a unit test on a machine busy with other work (it passed 5,000 examples on a quiet one).
hypothesis_settings.register_profile("no_deadline", deadline=None)
hypothesis_settings.load_profile("no_deadline")

TEST_REDIS_DB = int(os.environ.get("TEST_REDIS_DB", "13"))
WORK_DIR = Path(tempfile.mkdtemp(prefix="openim-tests-"))
_started: list[subprocess.Popen[bytes]] = []

# TEST_REDIS_CLUSTER=1: the whole run keeps its data on a real local Redis Cluster (three masters,
# three replicas) started here, and its brokers on a redis-server of its own (Celery needs one
# server), so such a run shares nothing with the machine's Redis or with a run it is nested in.
REDIS_CLUSTER = os.environ.get("TEST_REDIS_CLUSTER", "") == "1"

if embedded.redis_answers("redis://127.0.0.1:6379/0") and not REDIS_CLUSTER:
    REDIS_URL = f"redis://127.0.0.1:6379/{TEST_REDIS_DB}"
else:
    _port = embedded.free_port()
    _started.append(embedded.start_redis(_port, WORK_DIR / "redis", WORK_DIR / "redis.log"))
    REDIS_URL = f"redis://127.0.0.1:{_port}/{TEST_REDIS_DB}"

# Stacks that need a broker apart from the data Redis use this database (flushed by those tests).
BROKER_REDIS_URL = REDIS_URL.rsplit("/", 1)[0] + "/" + os.environ.get("TEST_BROKER_DB", str(TEST_REDIS_DB - 1))
# The shared stack's broker: the data Redis itself (the embedded default), or, on a cluster, this one.
STACK_BROKER_URL = REDIS_URL
CLUSTER: Any = None
if REDIS_CLUSTER:
    from tests.redis_cluster import LocalCluster

    CLUSTER = LocalCluster(WORK_DIR / "redis-cluster").start()
    REDIS_URL = CLUSTER.url


def _amqp_url() -> str:
    """TEST_AMQP_URL, else the machine's RabbitMQ on a vhost of this run's own (its queues have the
    stack's names, so two runs on one broker would take each other's messages)."""
    if os.environ.get("TEST_AMQP_URL"):
        return os.environ["TEST_AMQP_URL"]
    vhost = f"openim_test_{TEST_REDIS_DB}" + ("_cluster" if REDIS_CLUSTER else "")  # a nested cluster run: apart
    ctl = shutil.which("rabbitmqctl")
    if ctl is None:
        return "amqp://guest:guest@127.0.0.1:5672//"
    subprocess.run([ctl, "add_vhost", vhost], capture_output=True, timeout=60)
    subprocess.run([ctl, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"], capture_output=True, timeout=60)
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


AMQP_URL = _amqp_url()

MONGO_PORT = embedded.free_port()
MONGO_URL = f"mongodb://127.0.0.1:{MONGO_PORT}/openim_test?retryWrites=false"

os.environ.update(
    {
        "REDIS_URL": REDIS_URL,
        "REDIS_CLUSTER": "1" if REDIS_CLUSTER else "0",
        "BROKER_URL": STACK_BROKER_URL,
        "MONGO_URL": MONGO_URL,
        "TOKEN_SECRET": "test-token-secret-0123456789abcdef0123",
        "ADMIN_SECRET": "test-admin-secret-0123456789abcdef0123",
        "TRANSFER_SHARDS": "4",
        "LOG_LEVEL": "INFO",
    }
)


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[str]:
    proc = embedded.start_mongo(MONGO_PORT, WORK_DIR / "mongo", WORK_DIR / "mongo.log")
    from app.store.mongo import client as mongo

    mongo.ensure_indexes()  # as every writing process does at its start (unique records rely on them)
    yield MONGO_URL
    proc.terminate()
    proc.wait(timeout=20)


def flush_data_redis() -> None:
    """The data Redis loses every key (every master's, on a cluster)."""
    import redis
    from redis.cluster import RedisCluster

    if REDIS_CLUSTER:
        RedisCluster.from_url(REDIS_URL).flushall(target_nodes=RedisCluster.PRIMARIES)
    else:
        redis.Redis.from_url(REDIS_URL).flushdb()


@pytest.fixture(scope="session")
def clean_redis() -> str:
    import redis

    flush_data_redis()
    if REDIS_CLUSTER:
        redis.Redis.from_url(STACK_BROKER_URL).flushdb()
    return REDIS_URL


@pytest.fixture(scope="session")
def infra(mongo_server: str, clean_redis: str) -> dict[str, str]:
    return {"REDIS_URL": clean_redis, "MONGO_URL": mongo_server}


@pytest.fixture
def commit_guard() -> Iterator[None]:
    """For tests that set transfer's guard_commits hook: cleared afterwards."""
    yield
    from app.tasks.transfer import guard_commits

    guard_commits(None)


@pytest.fixture
def own_redis() -> Iterator[Any]:
    """A private redis-server, for tests that disturb their server (flush its scripts, kill its clients)."""
    import redis

    port = embedded.free_port()
    proc = embedded.start_redis(port, Path(tempfile.mkdtemp(prefix="own-redis-", dir=WORK_DIR)))
    client = redis.Redis(port=port, decode_responses=True)
    try:
        yield client
    finally:
        client.close()
        embedded.stop_processes([proc], timeout=10)


@pytest.fixture
def uid() -> str:
    """A fresh suffix so each test's users and conversations are its own."""
    return uuid.uuid4().hex[:8]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if CLUSTER is not None:
        CLUSTER.stop()
    for proc in _started:
        proc.terminate()
        proc.wait(timeout=10)
    if exitstatus == 0:
        shutil.rmtree(WORK_DIR, ignore_errors=True)
    else:
        print(f"\nprocess logs kept in {WORK_DIR}")


@pytest.fixture(scope="session")
def provider() -> Iterator[object]:
    from tests.fake_providers import FakeProvider

    with FakeProvider() as fake:
        yield fake


@pytest.fixture(scope="module")
def gateways(stack: Any) -> Iterator[Callable[..., Any]]:
    """Starts more gateway nodes on the shared stack (`gateways(name, env)`: stack.start_gateway)
    for one module's tests, and stops them when the module is done."""
    started: list[str] = []

    def start(name: str, env: dict[str, str] | None = None) -> Any:
        node = stack.start_gateway(name, env)
        started.append(name)
        return node

    yield start
    for name in started:
        stack.terminate(name)


@pytest.fixture(scope="session")
def stack(infra: dict[str, str], provider: object) -> Iterator[object]:
    """The whole pipeline on the Redis broker: gateway + transfer/persist/push/offline workers."""
    from tests.stack import Stack

    with Stack(WORK_DIR / "stack-redis", {**infra, "OFFLINE_PUSH_URL": provider.url}) as running:  # type: ignore[attr-defined]
        yield running.start()

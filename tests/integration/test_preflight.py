"""Start-up checks on real processes: they refuse in plain words, and start when all is well."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from app.ops import embedded
from tests.conftest import WORK_DIR
from tests.stack import ROOT, Stack

GOOD_SECRETS = {
    "TOKEN_SECRET": "k3J9-x_Qp2vL8mZr4TnW7yB1cF6hD0sA5eG",
    "ADMIN_SECRET": "Zq8_Lm3vN7xR2pT5wY9aB4cE6gH1jK0sD",
}


def run_app(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_explicit_production_refuses_a_broker_sharing_the_volatile_data_redis(stack: Any) -> None:
    """The tests' stack keeps broker and data in one Redis without an append-only file."""
    env = {**stack.env, **GOOD_SECRETS, "APP_ENV": "production", "METRICS_PORT": "0"}
    done = run_app(env, "worker", "push")
    assert done.returncode != 0
    assert "refusing to start the push" in done.stderr and "[broker-persistence]" in done.stderr, done.stderr
    assert "the broker is the data Redis" in done.stderr and "appendonly no" in done.stderr
    assert " ready." not in done.stdout + done.stderr  # it never consumed


def test_a_dev_secret_is_refused_in_explicit_production(stack: Any) -> None:
    env = {**stack.env, "APP_ENV": "production", "GATEWAY_PORT": str(embedded.free_port())}
    done = run_app(env, "gateway")  # the tests' secrets say "test"
    assert done.returncode != 0
    assert "refusing to start the gateway" in done.stderr and "[secrets]" in done.stderr, done.stderr
    assert "TOKEN_SECRET is a development or example value" in done.stderr


def test_a_gateway_with_another_transfer_shards_refuses_in_any_setting(stack: Any) -> None:
    """The stack's processes recorded TRANSFER_SHARDS=4: a gateway hashing to 3 shards would split
    conversations over queues, so it stops, even without APP_ENV=production."""
    env = {**stack.env, "TRANSFER_SHARDS": "3", "GATEWAY_PORT": str(embedded.free_port())}
    env.pop("APP_ENV", None)
    done = run_app(env, "gateway")
    assert done.returncode != 0
    assert "[transfer-shards]" in done.stderr and "TRANSFER_SHARDS is 3 here but 4" in done.stderr, done.stderr


def test_explicit_production_starts_when_every_check_passes(stack: Any) -> None:
    """A broker Redis of its own with an append-only file, real secrets, MongoDB's indexes made."""
    port = embedded.free_port()
    broker = embedded.start_redis(port, WORK_DIR / "durable-broker", WORK_DIR / "durable-broker.log", durable=True)
    run = Stack(WORK_DIR / "stack-preflight", {})
    try:
        env = {**GOOD_SECRETS, "APP_ENV": "production", "BROKER_URL": f"redis://127.0.0.1:{port}/0"}
        run.env.update({**stack.env, **env, "GATEWAY_PORT": str(run.gateway_port)})
        run.start_worker("push", "push")
        run.start_gateway("gateway-prod")
        log = run.log_text("push") + run.log_text("gateway-prod")
        assert "start-up check" not in log and "refusing" not in log, log[-3000:]
    finally:
        run.stop()
        embedded.stop_processes([broker], timeout=10)


def test_preflight_command_prints_what_it_finds(stack: Any, tmp_path: Path) -> None:
    done = run_app({**stack.env}, "preflight")
    assert done.returncode == 0, done.stderr  # warnings only: APP_ENV is not set explicitly
    assert "warning [broker-persistence]" in done.stdout
    refused = run_app({**stack.env, "APP_ENV": "production"}, "preflight")
    assert refused.returncode == 1 and "REFUSED [broker-persistence]" in refused.stdout

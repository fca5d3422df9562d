"""Pure parts of `python -m app bench e2e`: the load plan, process roles, percentiles, bottleneck naming."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.bench.e2e.plan import E2EConfig, make_plan
from app.bench.e2e.summary import _percentiles, name_bottleneck
from app.bench.e2e.watch import classify


def test_plan_puts_every_user_in_one_chat_first_then_adds_distinct_pairs() -> None:
    plan = make_plan(E2EConfig(users=10, conversations=5), "t")
    assert sorted(u for pair in plan.pairs for u in pair) == list(range(10))
    more = make_plan(E2EConfig(users=10, conversations=20), "t")
    assert len(more.pairs) == len(set(more.pairs)) == 20
    assert all(a < b for a, b in more.pairs)
    assert make_plan(E2EConfig(users=10, conversations=20), "t").pairs == more.pairs  # seeded


def test_plan_targets_cover_both_sides_of_a_chat_and_every_group_member() -> None:
    plan = make_plan(E2EConfig(users=6, conversations=3, groups=1, group_size=4), "t")
    targets = plan.targets()
    gid, members = plan.groups[0]
    assert len(members) == 4 and gid == "tg0"
    for a, b in plan.pairs:
        assert any(t.recv_id == plan.users[b] and t.fanout == 1 for t in targets[a])
        assert any(t.recv_id == plan.users[a] for t in targets[b])
    for m in members:
        assert any(t.group_id == gid and t.fanout == 3 and t.recv_id == "" for t in targets[m])
    assert len(plan.conversations()) == 4


def test_roles_by_command_line() -> None:
    py = "/usr/bin/python3"
    assert classify([py, "-m", "app", "gateway"], "python3") == "gateway"
    assert classify(["python", "-m", "app", "worker", "transfer"], "python") == "worker transfer"
    assert classify([py, "-m", "app.bench.baseline", "worker", "--concurrency", "2"], "python3") == "baseline worker"
    assert classify(["redis-server 127.0.0.1:6379"], "redis-server") == "redis-server"
    assert classify([py, "-c", "from secantus.cli import main", "--port", "1"], "python3") == "secantusdb"
    assert classify(["/bin/sh", "-c", "python -m app gateway"], "sh") is None  # honcho's shell wrapper
    assert classify([py, "-m", "app", "up"], "python3") is None


def test_percentiles_are_ordered() -> None:
    values = np.random.default_rng(1).exponential(20.0, 5000).astype(np.float32)
    p = _percentiles(values)
    assert p["count"] == 5000
    assert p["p50"] <= p["p95"] <= p["p99"] <= p["max"]
    assert _percentiles(np.zeros(0, dtype=np.float32))["count"] == 0


def _summary(queues: dict[str, int], cpu: dict[str, float], machine: float = 50.0, rate: float = 0.0) -> Any:
    return {
        "queues": {q: {"max": n} for q, n in queues.items()},
        "processes": [{"name": k, "cpu_pct_while_sending": v, "peak_cpu_pct": v} for k, v in cpu.items()],
        "machine_cpu_pct": machine,
        "config": {"rate": rate},
    }


def test_bottleneck_is_the_grown_queue_or_the_store_its_worker_waits_on() -> None:
    busy_worker = _summary({"transfer.0": 50, "transfer.1": 40, "persist": 3}, {"worker transfer": 97.0})
    assert "transfer is the bottleneck" in name_bottleneck(busy_worker)
    waiting = _summary({"persist": 900}, {"worker persist": 3.0, "secantusdb": 90.0})
    assert "secantusdb is the bottleneck" in name_bottleneck(waiting)
    cpu_bound = _summary({"persist": 2}, {"gateway": 98.0, "bench clients": 99.0})
    assert "gateway is CPU-bound" in name_bottleneck(cpu_bound)
    assert "carried" in name_bottleneck(_summary({"push": 0}, {"gateway": 20.0}, rate=500))

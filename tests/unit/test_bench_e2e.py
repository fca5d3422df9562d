"""Pure parts of `python -m app bench e2e`: the load plan, process roles, percentiles, bottleneck naming."""

from __future__ import annotations

from typing import Any

import numpy as np

from app.bench.e2e.plan import E2EConfig, make_plan
from app.bench.e2e.summary import Sample, _percentiles, cpu_ms_per_delivery, empty_after, name_bottleneck
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
    kept_up = _summary({"persist": 60}, {"worker persist": 3.0, "gateway": 20.0}) | {"persist_empty_after_s": 1.5}
    assert "persist" not in name_bottleneck(kept_up)
    behind = _summary({"persist": 60}, {"worker persist": 3.0, "gateway": 20.0}) | {"persist_empty_after_s": 9.0}
    assert "persist is the bottleneck" in name_bottleneck(behind)


def test_cpu_ms_per_delivery_per_process_and_summed_with_and_without_the_load_clients() -> None:
    procs = [
        {"name": "gateway", "cpu_s": 2.0},
        {"name": "secantusdb", "cpu_s": 1.0},
        {"name": "bench clients", "cpu_s": 0.5},
    ]
    out = cpu_ms_per_delivery(procs, 4000)
    assert out["by_process"] == {"gateway": 0.5, "secantusdb": 0.25, "bench clients": 0.125}
    assert out["stack"] == 0.75
    assert out["with_clients"] == 0.875
    nothing = cpu_ms_per_delivery(procs, 0)
    assert nothing["stack"] is None and nothing["by_process"]["gateway"] is None


def _sample(t: float, persist: int, in_flight: int = 0) -> Sample:
    return Sample(t=t, sent=0, acked=0, delivered=0, queues={"persist": persist}, in_flight=in_flight, cpu={})


def test_persist_empty_after_sending_counts_from_the_end_of_sending_to_the_last_time_it_emptied() -> None:
    samples = [_sample(9.5, 30), _sample(10.5, 12), _sample(11.0, 0), _sample(11.5, 4), _sample(12.5, 0)]
    assert empty_after(samples, 10.0, "persist") == 2.5  # emptied at 11.0 but refilled: 12.5 counts
    held = [_sample(10.5, 0, in_flight=7), _sample(13.0, 0)]
    assert empty_after(held, 10.0, "persist") == 3.0  # taken but unacknowledged is not empty
    assert empty_after([_sample(9.0, 0), _sample(10.5, 0)], 10.0, "persist") == 0.0
    assert empty_after([_sample(9.0, 0), _sample(10.5, 5)], 10.0, "persist") is None

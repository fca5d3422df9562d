"""What one bench e2e phase measured (samples, per-process results) and its summary: counts, latency
percentiles, a per-second timeline, and the stage that held the rest back."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from app.bench.e2e.load import ProcResult
from app.bench.e2e.plan import E2EConfig, Plan
from app.bench.e2e.watch import ProcessWatch


def _percentiles(values: np.ndarray[Any, Any]) -> dict[str, float | int]:
    if values.size == 0:
        return {"count": 0, "p50": 0.0, "p95": 0.0, "p99": 0.0, "max": 0.0, "mean": 0.0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "count": int(values.size),
        "p50": round(float(p50), 2),
        "p95": round(float(p95), 2),
        "p99": round(float(p99), 2),
        "max": round(float(values.max()), 2),
        "mean": round(float(values.mean()), 2),
    }


@dataclass
class Sample:
    t: float
    sent: int
    acked: int
    delivered: int
    queues: dict[str, int]
    in_flight: int
    cpu: dict[str, float]


@dataclass
class PhaseData:
    """Everything one phase measured, before it is summarised."""

    label: str
    cfg: E2EConfig
    plan: Plan
    results: list[ProcResult]
    samples: list[Sample]
    watch: ProcessWatch
    drained: bool
    drain_s: float
    stored: dict[str, int]
    queue_names: list[str]
    setup_s: float
    connect_errors: int
    series: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)


# --- summarising a phase -------------------------------------------------------------------------


def summarise(data: PhaseData) -> dict[str, Any]:
    cfg, results = data.cfg, data.results

    def cat(name: str) -> np.ndarray[Any, Any]:
        parts = [np.frombuffer(getattr(r, name), dtype=np.float32) for r in results]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)

    ack_at, ack_ms, push_at, push_ms = cat("ack_at"), cat("ack_ms"), cat("push_at"), cat("push_ms")
    data.series = {"ack_at": ack_at, "ack_ms": ack_ms, "push_at": push_at, "push_ms": push_ms}
    acked_ids = {cmid for r in results for cmid in r.acked_ids}
    stored_ids = set(data.stored)
    sent = sum(r.sent for r in results)
    acked = sum(r.acked for r in results)
    delivered = sum(r.delivered for r in results)
    refused: dict[str, int] = {}
    for r in results:
        for code, n in r.refused.items():
            refused[str(code)] = refused.get(str(code), 0) + n
    dup_push = sum(r.duplicate_pushes for r in results)
    dup_stored = sum(n - 1 for n in data.stored.values())
    not_persisted = len(acked_ids - stored_ids)
    # End to end: from the first send to the last delivery (the drain tail counts against us).
    received = push_at + push_ms / 1000.0
    last_delivery = float(received.max()) if received.size else cfg.duration
    span = max(cfg.duration, last_delivery)
    queues_max = {q: max((s.queues.get(q, 0) for s in data.samples), default=0) for q in data.queue_names}
    sending = [s for s in data.samples if s.t <= cfg.duration]
    queues_at_end = sending[-1].queues if sending else {}
    processes = data.watch.summary()
    cpu_ms = cpu_ms_per_delivery(processes, delivered)
    for row in processes:
        row["cpu_ms_per_delivery"] = cpu_ms["by_process"].get(row["name"])
    summary: dict[str, Any] = {
        "label": data.label,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("json_path", "plot_path", "progress")},
        "description": cfg.describe(),
        "tag": data.plan.tag,
        "users": cfg.users,
        "conversations": {"single": len(data.plan.pairs), "groups": len(data.plan.groups)},
        "connect_errors": data.connect_errors,
        "connect_retries": sum(r.connect_retries for r in results),
        "connect_error_samples": [e for r in results for e in r.connect_errors][:5],
        "setup_s": round(data.setup_s, 2),
        "drained": data.drained,
        "drain_s": round(data.drain_s, 2),
        "messages": {
            "sent": sent,
            "acknowledged": acked,
            "refused": sum(refused.values()),
            "refused_by_code": refused,
            "unanswered": sum(r.unanswered for r in results),
            "persisted": len(stored_ids),
            "persisted_unacknowledged": len(stored_ids - acked_ids),
            # final only once the pipeline drained; otherwise some may still be on their way
            "lost": not_persisted if data.drained else None,
            "not_persisted_at_end": not_persisted,
            "duplicated": dup_push + dup_stored,
            "duplicated_pushes": dup_push,
            "duplicated_stored": dup_stored,
            "deliveries": delivered,
            "expected_deliveries": sum(r.expected_deliveries for r in results),
            "echoes_to_sender": sum(r.echoes for r in results),
            "other_pushes": sum(r.foreign_pushes for r in results),
            "connections_closed_early": sum(r.closed_early for r in results),
        },
        "throughput": {
            "sent_msgs_per_s": round(sent / cfg.duration, 1),
            "accepted_msgs_per_s": round(acked / cfg.duration, 1),
            "deliveries_per_s": round(delivered / span, 1),
            "deliveries_per_s_while_sending": round(int((received <= cfg.duration).sum()) / cfg.duration, 1),
            "end_to_end_span_s": round(span, 2),
        },
        "latency_ms": {"ack": _percentiles(ack_ms), "push": _percentiles(push_ms)},
        "processes": processes,
        "cpu_ms_per_delivery": {k: v for k, v in cpu_ms.items() if k != "by_process"},
        "persist_empty_after_s": empty_after(data.samples, cfg.duration, "persist"),
        "machine_cpu_pct": data.watch.machine_cpu_pct(),
        "queues": {q: {"max": queues_max[q], "at_end_of_sending": queues_at_end.get(q, 0)} for q in data.queue_names},
        "timeline": timeline(data),
    }
    summary["bottleneck"] = name_bottleneck(summary)
    return summary


CLIENTS = "bench clients"


def cpu_ms_per_delivery(processes: list[dict[str, Any]], delivered: int) -> dict[str, Any]:
    """CPU milliseconds per delivered message: per process (CPU seconds from the start of sending
    until the pipeline drained, so a stage catching up afterwards counts), the stack's sum, and the
    sum with the load clients. None when nothing was delivered."""
    if delivered <= 0:
        return {"by_process": {p["name"]: None for p in processes}, "stack": None, "with_clients": None}
    by_process = {p["name"]: round(p["cpu_s"] * 1000.0 / delivered, 3) for p in processes}
    stack = sum(p["cpu_s"] for p in processes if p["name"] != CLIENTS)
    everything = sum(p["cpu_s"] for p in processes)
    return {
        "by_process": by_process,
        "stack": round(stack * 1000.0 / delivered, 3),
        "with_clients": round(everything * 1000.0 / delivered, 3),
    }


def empty_after(samples: list[Sample], duration: float, queue: str) -> float | None:
    """Seconds from the end of sending until `queue` was empty with nothing taken unacknowledged,
    and stayed so in every later sample; 0.0 when it was so already; None when it never was."""
    settled: float | None = None
    for s in samples:
        if s.queues.get(queue, 0) == 0 and s.in_flight == 0:
            if settled is None:
                settled = s.t
        else:
            settled = None
    if settled is None:
        return None
    return round(max(0.0, settled - duration), 2)


def timeline(data: PhaseData) -> list[dict[str, Any]]:
    """Per-second figures: messages acknowledged and delivered, latency percentiles, queue depths."""
    s = data.series
    horizon = max(data.cfg.duration, max((x.t for x in data.samples), default=0.0))
    step = 1.0 if data.cfg.duration >= 10 else 0.5
    buckets = max(1, math.ceil(horizon / step))
    out = []
    recv = s["push_at"] + s["push_ms"] / 1000.0
    for b in range(buckets):
        lo, hi = b * step, (b + 1) * step
        acks = s["ack_ms"][(s["ack_at"] >= lo) & (s["ack_at"] < hi)]
        pushes = s["push_ms"][(s["push_at"] >= lo) & (s["push_at"] < hi)]
        in_bucket = [x for x in data.samples if lo <= x.t < hi]
        row: dict[str, Any] = {
            "t": round(lo, 2),
            "acked_per_s": round(acks.size / step, 1),
            "delivered_per_s": round(int(((recv >= lo) & (recv < hi)).sum()) / step, 1),
            "ack_p50_ms": round(float(np.percentile(acks, 50)), 2) if acks.size else None,
            "ack_p99_ms": round(float(np.percentile(acks, 99)), 2) if acks.size else None,
            "push_p50_ms": round(float(np.percentile(pushes, 50)), 2) if pushes.size else None,
            "push_p99_ms": round(float(np.percentile(pushes, 99)), 2) if pushes.size else None,
            "queues": {q: max(x.queues.get(q, 0) for x in in_bucket) for q in data.queue_names} if in_bucket else {},
            "cpu_pct": {k: round(max(x.cpu.get(k, 0.0) for x in in_bucket), 1) for k in in_bucket[0].cpu}
            if in_bucket
            else {},
        }
        out.append(row)
    return out


def _stage_of(queue: str) -> str:
    return "transfer" if queue.startswith("transfer.") else queue


def name_bottleneck(summary: dict[str, Any]) -> str:
    """The queue that grew most names its stage; with no queue grown, the busiest process does."""
    grown: dict[str, int] = {}
    persist_after = summary.get("persist_empty_after_s")
    for q, depth in summary["queues"].items():
        stage = _stage_of(q)
        if stage == "persist" and persist_after is not None and persist_after <= 5.0:
            continue  # a merging persist worker lets hand-offs wait for its linger: kept up all the same
        grown[stage] = grown.get(stage, 0) + int(depth["max"])
    cpu = {p["name"]: p["cpu_pct_while_sending"] for p in summary["processes"]}
    stage, depth = max(grown.items(), key=lambda kv: kv[1], default=("", 0))
    if depth >= 20:
        worker = {"transfer": "worker transfer", "persist": "worker persist", "push": "worker push"}.get(
            stage, "baseline worker" if stage == "baseline" else f"worker {stage}"
        )
        busy = cpu.get(worker, 0.0)
        stores = {k: v for k, v in cpu.items() if k in ("secantusdb", "redis-server", "mongod")}
        store, store_busy = max(stores.items(), key=lambda kv: kv[1], default=("", 0.0))
        peak = {p["name"]: p["peak_cpu_pct"] for p in summary["processes"]}.get(store, 0.0)
        grew = f"the {stage} queue grew (up to {depth} broker messages)"
        if busy < 60 and (store_busy >= 60 or peak >= 95):
            return (
                f"{grew} while its worker computed only {busy:.0f}% of a core: it waits on {store} "
                f"({store_busy:.0f}% of a core while sending, peaks {peak:.0f}%): {store} is the bottleneck"
            )
        return f"{grew}, its worker at {busy:.0f}% of a core: {stage} is the bottleneck"
    stack = {k: v for k, v in cpu.items() if k != "bench clients"}
    name, busy = max(stack.items(), key=lambda kv: kv[1], default=("", 0.0))
    machine = summary["machine_cpu_pct"]
    if busy >= 80:
        extra = f"; the machine was {machine:.0f}% busy (the load clients take their share)" if machine >= 85 else ""
        return f"no queue grew; {name} is CPU-bound at {busy:.0f}% of one core while sending{extra}"
    if machine >= 85:
        return f"no queue grew; the machine's 2 cores were {machine:.0f}% busy (stack and load clients together)"
    if summary["config"]["rate"] > 0:
        return f"nothing saturated: the offered {summary['config']['rate']:,.0f} msg/s were carried"
    return (
        f"nothing saturated (busiest: {name} at {busy:.0f}% of a core): senders wait for acknowledgements; "
        "raise --inflight or --users"
    )

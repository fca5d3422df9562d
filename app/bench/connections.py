"""`python -m app bench connections`: how many websockets one running gateway process holds, and what
they cost it, while some of them chat.

`count` users connect (asyncio `websockets` clients in this process, `CONNECT_CONCURRENCY` handshakes
at a time, never retried: a failure is the gateway's or this machine's, and is counted with its
reason). A connection counts as opened once the gateway confirmed its login (isMsgResp). All are then
held for `hold` seconds; meanwhile the first `chatting` of them, in pairs, send single-chat messages
at a fixed total `rate` (the e2e bench's clients: app/bench/e2e/load.py, so ack and send-to-push
latency mean the same there and here). A connection the gateway closes before the end is dropped.
(A chatter whose peer failed to open sends to an offline user: acknowledged, not delivered, shown.)
The gateway's process (found by the port it listens on) is sampled with psutil: RSS per connection,
and CPU while opening and while holding. Figures are printed (and written as JSON), never asserted.
"""

from __future__ import annotations

import asyncio
import json
import resource
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import numpy as np
import psutil
import requests

from app.bench.e2e.load import LoadProcess, ProcSpec, Target, User, UserSpec, _Shared, log_in
from app.core.constants import LINUX
from app.core.conversation import single_conversation_id
from app.services.auth import mint_token

CONNECT_CONCURRENCY = 200  # handshakes in flight, as many clients reconnecting after a node restart
ACK_WAIT_SECONDS = 15.0  # after the hold: for the last answers, then for the last pushes
DEFAULT_SECONDS_PER_MESSAGE = 5.0  # --rate's default: each chatting user sends every 5 s


@dataclass(frozen=True)
class ConnectionsConfig:
    url: str
    count: int = 10_000
    hold: float = 10.0
    chatting: int = 0  # rounded down to pairs, at most `count`
    rate: float = 0.0  # total messages/s; 0: chatting / DEFAULT_SECONDS_PER_MESSAGE
    json_path: str = ""


def gateway_process(url: str) -> psutil.Process | None:
    """The `python -m app gateway` process listening on the URL's port (None when not on this machine)."""
    port = urlparse(url).port or 80
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if "app" not in cmdline or "gateway" not in cmdline:
            continue
        try:
            if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in proc.net_connections("tcp")):
                return proc
        except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
    return None


class GatewayWatch:
    """RSS and CPU seconds of the gateway process (zeros when it is not on this machine)."""

    def __init__(self, proc: psutil.Process | None) -> None:
        self.proc = proc
        self.peak_rss = 0

    def rss(self) -> int:
        if self.proc is None:
            return 0
        rss = int(self.proc.memory_info().rss)
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def cpu_s(self) -> float:
        if self.proc is None:
            return 0.0
        cpu = self.proc.cpu_times()
        return float(cpu.user + cpu.system)


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _percentiles(values: Any) -> dict[str, float | int]:
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        return {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0}
    p50, p99 = np.percentile(data, [50, 99])
    return {
        "count": int(data.size),
        "p50": round(float(p50), 1),
        "p99": round(float(p99), 1),
        "max": round(float(data.max()), 1),
    }


def timeline(at: Any, ms: Any) -> list[dict[str, float | int]]:
    """Per second of the hold (by send time): how many, and the worst latency (stalls show here)."""
    seconds = np.asarray(at, dtype=np.float64).astype(int)
    values = np.asarray(ms, dtype=np.float64)
    rows: list[dict[str, float | int]] = []
    for second in np.unique(seconds):
        chosen = values[seconds == second]
        rows.append({"second": int(second), "count": int(chosen.size), "max_ms": round(float(chosen.max()), 1)})
    return rows


def _reason(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text[:120]


def make_users(tag: str, count: int, chatting: int) -> list[UserSpec]:
    """`count` users; the first `chatting` (rounded down to pairs) in single chats two by two."""
    ids = [f"{tag}c{i}" for i in range(count)]
    chatting = min(count, chatting) // 2 * 2
    specs = []
    for i, user_id in enumerate(ids):
        targets: tuple[Target, ...] = ()
        if i < chatting:
            peer = ids[i ^ 1]
            targets = (Target(single_conversation_id(user_id, peer), peer, "", 1),)
        specs.append(UserSpec(i, user_id, mint_token(user_id, LINUX), targets))
    return specs


async def _open(user: User, gate: asyncio.Semaphore, failures: Counter[str]) -> None:
    async with gate:
        try:
            refused = await log_in(user, answer_timeout=30, reason=_reason)
        except Exception as exc:  # whatever stops a handshake is a failure to count, never the bench's end
            failures[_reason(exc)] += 1
            return
        if refused is not None:
            failures[refused[:120]] += 1


def _held_by_gateway(url: str) -> int | None:
    http = url.replace("ws://", "http://", 1).replace("wss://", "https://", 1).rstrip("/")
    try:
        return int(requests.get(f"{http}/healthz", timeout=30).json()["connections"])
    except (requests.RequestException, ValueError, KeyError, TypeError):
        return None


async def run(cfg: ConnectionsConfig, watch: GatewayWatch) -> dict[str, Any]:
    tag = f"bc{uuid.uuid4().hex[:6]}"
    specs = make_users(tag, cfg.count, cfg.chatting)
    chatting = sum(1 for s in specs if s.targets)
    rate = cfg.rate or chatting / DEFAULT_SECONDS_PER_MESSAGE
    spec = ProcSpec(0, cfg.url, tag, tuple(specs), rate, 1, cfg.hold, LINUX, "json")
    proc = LoadProcess(spec, _Shared(None, None, None, None, None))  # only its users and paced sending

    rss_before, gw_cpu0, own_cpu0 = watch.rss(), watch.cpu_s(), own_cpu_s()
    failures: Counter[str] = Counter()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    started = time.monotonic()
    await asyncio.gather(*(_open(u, gate, failures) for u in proc.users))
    open_s = time.monotonic() - started
    opened = [u for u in proc.users if u.ws is not None]
    readers = [asyncio.create_task(u.read_forever()) for u in opened]  # answers pings; sees drops
    rss_open, gw_cpu1, own_cpu1 = watch.rss(), watch.cpu_s(), own_cpu_s()

    async def sample_rss() -> None:
        while True:
            await asyncio.sleep(1.0)
            watch.rss()

    sampler = asyncio.create_task(sample_rss())
    psutil.cpu_percent(interval=None)  # the machine's CPU over the hold: others' load shows in latency
    proc.t0, hold_started_at = time.monotonic(), time.time()
    senders = [u for u in opened if u.spec.targets]
    if senders and rate > 0:
        await proc.paced(senders, proc.t0 + cfg.hold)
    else:
        await asyncio.sleep(cfg.hold)
    gw_cpu2, own_cpu2, machine_pct = watch.cpu_s(), own_cpu_s(), psutil.cpu_percent(interval=None)
    held_s = time.monotonic() - proc.t0
    result = proc.result
    deadline = time.monotonic() + ACK_WAIT_SECONDS
    while time.monotonic() < deadline and (
        any(u.pending for u in opened) or result.delivered < result.expected_deliveries
    ):
        await asyncio.sleep(0.05)
    dropped = result.closed_early  # readers that ended before we closed: the gateway dropped them
    held = await asyncio.to_thread(_held_by_gateway, cfg.url)
    rss_end = watch.rss()
    sampler.cancel()

    proc.closing = True
    await asyncio.gather(*(u.ws.close() for u in opened if u.ws is not None), return_exceptions=True)
    await asyncio.gather(*readers, return_exceptions=True)

    per_conn = (rss_open - rss_before) / max(1, len(opened))
    return {
        "url": cfg.url,
        "count": cfg.count,
        "opened": len(opened),
        "failed": sum(failures.values()),
        "failures": dict(failures.most_common()),
        "open_seconds": round(open_s, 2),
        "hold_seconds": round(held_s, 2),
        "hold_started_at": round(hold_started_at, 3),  # epoch seconds, to set the timeline beside logs
        "dropped": dropped,
        "gateway_reports_held": held,
        "chatting": chatting,
        "rate": rate,
        "messages": {
            "sent": result.sent,
            "acked": result.acked,
            "refused": sum(result.refused.values()),
            "unanswered": sum(len(u.pending) for u in opened),
            "delivered": result.delivered,
            "expected_deliveries": result.expected_deliveries,
            "duplicate_pushes": result.duplicate_pushes,
        },
        "latency_ms": {"ack": _percentiles(result.ack_ms), "push": _percentiles(result.push_ms)},
        "ack_timeline": timeline(result.ack_at, result.ack_ms),
        "gateway": {
            "found": watch.proc is not None,
            "rss_mb": {
                "before": round(rss_before / 2**20, 1),
                "opened": round(rss_open / 2**20, 1),
                "end": round(rss_end / 2**20, 1),
                "peak": round(watch.peak_rss / 2**20, 1),
            },
            "kib_per_connection": round(per_conn / 1024, 1),
            "cpu_pct_opening": round((gw_cpu1 - gw_cpu0) / max(1e-6, open_s) * 100, 1),
            "cpu_pct_holding": round((gw_cpu2 - gw_cpu1) / max(1e-6, held_s) * 100, 1),
            "cpu_ms_per_message": round((gw_cpu2 - gw_cpu1) * 1000 / result.sent, 3) if result.sent else None,
        },
        "machine": {
            "cpu_pct_holding": round(machine_pct, 1),  # of all cores, every process on the machine
            "cores": psutil.cpu_count(),
            "load_average_1min": round(psutil.getloadavg()[0], 2),
        },
        "client_cpu_pct": {
            "opening": round((own_cpu1 - own_cpu0) / max(1e-6, open_s) * 100, 1),
            "holding": round((own_cpu2 - own_cpu1) / max(1e-6, held_s) * 100, 1),
        },
    }


def print_report(r: dict[str, Any]) -> None:
    gw, msgs, lat = r["gateway"], r["messages"], r["latency_ms"]
    held = "?" if r["gateway_reports_held"] is None else f"{r['gateway_reports_held']:,}"
    print(f"\nconnections to {r['url']}: {r['count']:,} asked")
    print(
        f"  opened {r['opened']:,}, failed {r['failed']:,} in {r['open_seconds']:.1f}s"
        f" ({r['opened'] / max(1e-6, r['open_seconds']):,.0f}/s)"
    )
    for reason, n in list(r["failures"].items())[:5]:
        print(f"    {n:,} x {reason}")
    print(f"  held {r['hold_seconds']:.0f}s: dropped {r['dropped']:,}; the gateway reports {held} connections")
    if r["chatting"]:
        print(f"  chatting: {r['chatting']:,} users in {r['chatting'] // 2:,} single chats at {r['rate']:g} msg/s")
        print(
            f"  messages: sent {msgs['sent']:,}, acked {msgs['acked']:,} (refused {msgs['refused']:,},"
            f" unanswered {msgs['unanswered']:,}), delivered {msgs['delivered']:,} of {msgs['expected_deliveries']:,}"
        )
        print(
            f"  ack p50 {lat['ack']['p50']:.1f} ms / p99 {lat['ack']['p99']:.1f} ms;"
            f" send-to-push p50 {lat['push']['p50']:.1f} ms / p99 {lat['push']['p99']:.1f} ms"
        )
    if gw["found"]:
        rss = gw["rss_mb"]
        per_msg = "" if gw["cpu_ms_per_message"] is None else f", {gw['cpu_ms_per_message']:.2f} ms per message"
        print(
            f"  gateway RSS {rss['before']:.0f} MiB -> {rss['opened']:.0f} MiB opened"
            f" -> {rss['end']:.0f} MiB at the end (peak {rss['peak']:.0f}):"
            f" {gw['kib_per_connection']:.1f} KiB per connection"
        )
        print(
            f"  gateway CPU (% of one core): {gw['cpu_pct_opening']:.0f} while opening,"
            f" {gw['cpu_pct_holding']:.0f} while holding{per_msg}"
        )
    else:
        print("  gateway process not found on this machine: no RSS or CPU figures")
    cpu = r["client_cpu_pct"]
    print(f"  bench client CPU (% of one core): {cpu['opening']:.0f} while opening, {cpu['holding']:.0f} while holding")
    machine = r["machine"]
    print(
        f"  machine: {machine['cpu_pct_holding']:.0f}% of its {machine['cores']} cores busy while holding,"
        f" load average {machine['load_average_1min']:.1f} at the end"
    )


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def bench_connections(cfg: ConnectionsConfig) -> dict[str, Any]:
    _raise_open_files()  # one descriptor per client socket
    watch = GatewayWatch(gateway_process(cfg.url))
    report = asyncio.run(run(cfg, watch))
    print_report(report)
    if cfg.json_path:
        with open(cfg.json_path, "w") as out:
            json.dump(report, out, indent=2)
    return report

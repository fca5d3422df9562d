"""What `python -m app bench e2e` watches while it runs: the stack's processes and the broker's queues.

Processes are found by command line (`-m app gateway`, `-m app worker <kind>`, `-m app.bench.baseline ...`,
Flower, `redis-server`, SecantusDB) and kept only when they belong to the stack under test: the
Python processes by the REDIS_URL in their environment, Redis and SecantusDB by the port they serve.
A process's Celery pool children count with it.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import psutil

from app.store.redis.keys import journal_key

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
# kombu's Redis transport keeps messages of priority > 0 in lists of their own.
KOMBU_PRIORITY_SUFFIXES = ("", "\x06\x163", "\x06\x166", "\x06\x169")

_WORKER = re.compile(r"-m app worker (\w+)")
_BASELINE = re.compile(r"-m app\.bench\.baseline (\w+)")


def _port(url: str, default: int) -> int:
    return urlparse(url).port or default


def _listens_on(proc: psutil.Process, port: int) -> bool:
    try:
        return any(
            c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port
            for c in proc.net_connections(kind="tcp")
        )
    except (psutil.AccessDenied, psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def _same_redis(proc: psutil.Process, redis_url: str) -> bool:
    try:
        theirs = proc.environ().get("REDIS_URL") or DEFAULT_REDIS_URL
    except psutil.AccessDenied:
        return True  # cannot tell: count it
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    return theirs.rstrip("/") == redis_url.rstrip("/")


def classify(cmdline: list[str], name: str) -> str | None:
    """The stack role of a process from its command line, or None."""
    joined = " ".join(cmdline)
    exe = os.path.basename(cmdline[0]) if cmdline else ""
    if "redis-server" in name or "redis-server" in exe:
        return "redis-server"
    if not exe.startswith(("python", "celery", "flower")):
        return None  # e.g. the `sh -c` wrapper honcho runs each command in
    if "secantus" in joined:
        return "secantusdb"
    if "-m app gateway" in joined:
        return "gateway"
    worker = _WORKER.search(joined)
    if worker:
        return f"worker {worker.group(1)}"
    baseline = _BASELINE.search(joined)
    if baseline:
        return f"baseline {baseline.group(1)}"
    if "flower" in joined and "app.celery_app" in joined:
        return "flower"
    return None


def discover_stack(redis_url: str, mongo_url: str) -> dict[str, list[psutil.Process]]:
    """role -> root processes of the stack at these URLs (pool children are added when sampling)."""
    redis_port = _port(redis_url, 6379)
    mongo_port = _port(mongo_url, 27017)
    found: dict[int, tuple[str, psutil.Process]] = {}
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        try:
            cmdline = proc.info["cmdline"] or []
            role = classify(cmdline, proc.info["name"] or "")
            if role is None:
                continue
            if role == "redis-server":
                ok = _listens_on(proc, redis_port)
            elif role == "secantusdb":
                ok = "--port" in cmdline and cmdline[cmdline.index("--port") + 1] == str(mongo_port)
            else:
                ok = _same_redis(proc, redis_url)
            if ok:
                found[proc.pid] = (role, proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, IndexError):
            continue
    roles: dict[str, list[psutil.Process]] = {}
    for role, proc in found.values():
        try:
            if any(parent.pid in found for parent in proc.parents()):
                continue  # a pool child: counted with its parent
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        roles.setdefault(role, []).append(proc)
    return roles


@dataclass
class _Group:
    name: str
    roots: list[psutil.Process]
    first_cpu: dict[int, float] = field(default_factory=dict)
    last_cpu: dict[int, float] = field(default_factory=dict)
    peak_rss: int = 0
    pids: set[int] = field(default_factory=set)
    prev_total: float = 0.0
    busiest: float = 0.0  # highest CPU % (of one core) over one sampling interval

    def members(self) -> list[psutil.Process]:
        out: list[psutil.Process] = []
        for root in self.roots:
            out.append(root)
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                out.extend(root.children(recursive=True))
        return out

    def cpu_s(self) -> float:
        return sum(self.last_cpu[pid] - self.first_cpu.get(pid, 0.0) for pid in self.last_cpu)


class ProcessWatch:
    """CPU seconds and peak RSS per stack role, sampled while the benchmark runs."""

    def __init__(self, roles: dict[str, list[psutil.Process]]) -> None:
        self.groups = {name: _Group(name, procs) for name, procs in sorted(roles.items())}
        self.started = 0.0
        self.last = 0.0
        self.mark_at: float | None = None
        self.mark_cpu: dict[str, float] = {}
        psutil.cpu_percent(interval=None)
        self.machine_samples: list[float] = []

    def start(self) -> None:
        self.started = self.last = time.monotonic()
        for group in self.groups.values():
            for proc in group.members():
                with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    cpu = proc.cpu_times()
                    group.first_cpu[proc.pid] = group.last_cpu[proc.pid] = cpu.user + cpu.system
                    group.pids.add(proc.pid)
            group.prev_total = group.cpu_s()
        psutil.cpu_percent(interval=None)

    def sample(self) -> dict[str, float]:
        """Returns role -> CPU % of one core since the previous sample."""
        now = time.monotonic()
        interval = max(1e-6, now - self.last)
        self.last = now
        busy: dict[str, float] = {}
        for group in self.groups.values():
            rss = 0
            for proc in group.members():
                try:
                    with proc.oneshot():
                        cpu = proc.cpu_times()
                        rss += proc.memory_info().rss
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                group.last_cpu[proc.pid] = cpu.user + cpu.system
                group.first_cpu.setdefault(proc.pid, 0.0)  # a pool child born during the run
                group.pids.add(proc.pid)
            group.peak_rss = max(group.peak_rss, rss)
            total = group.cpu_s()
            busy[group.name] = (total - group.prev_total) / interval * 100.0
            group.busiest = max(group.busiest, busy[group.name])
            group.prev_total = total
        self.machine_samples.append(psutil.cpu_percent(interval=None))
        return busy

    def mark(self) -> None:
        """Remember CPU seconds now (the end of the sending window)."""
        self.mark_at = time.monotonic()
        self.mark_cpu = {name: g.cpu_s() for name, g in self.groups.items()}

    def summary(self) -> list[dict[str, Any]]:
        wall = max(1e-6, self.last - self.started)
        window = max(1e-6, (self.mark_at or self.last) - self.started)
        rows = []
        for name, group in self.groups.items():
            rows.append(
                {
                    "name": name,
                    "pids": sorted(group.pids),
                    "cpu_s": round(group.cpu_s(), 2),
                    "cpu_pct_of_core": round(group.cpu_s() / wall * 100.0, 1),
                    "cpu_pct_while_sending": round(self.mark_cpu.get(name, group.cpu_s()) / window * 100.0, 1),
                    "peak_cpu_pct": round(group.busiest, 1),
                    "peak_rss_mb": round(group.peak_rss / 2**20, 1),
                }
            )
        return rows

    def machine_cpu_pct(self) -> float:
        """Mean CPU use of the whole machine, percent of all its cores."""
        samples = self.machine_samples
        return round(sum(samples) / len(samples), 1) if samples else 0.0


class QueueDepth:
    """Messages waiting in each broker queue, and (Redis) how many are taken but not yet acknowledged."""

    def __init__(self, broker_url: str, queues: Iterable[str]) -> None:
        self.broker_url = broker_url
        self.queues = list(queues)
        self.amqp = broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))
        self._redis: Any = None
        self._conn: Any = None
        self._channel: Any = None

    def _redis_client(self) -> Any:
        if self._redis is None:
            import redis

            self._redis = redis.Redis.from_url(self.broker_url, socket_timeout=5)
        return self._redis

    def sample(self) -> dict[str, int]:
        if self.amqp:
            return {q: self._amqp_depth(q) for q in self.queues}
        pipe = self._redis_client().pipeline(transaction=False)
        for queue in self.queues:
            for suffix in KOMBU_PRIORITY_SUFFIXES:
                pipe.llen(queue + suffix)
        counts = pipe.execute()
        n = len(KOMBU_PRIORITY_SUFFIXES)
        return {q: int(sum(counts[i * n : (i + 1) * n])) for i, q in enumerate(self.queues)}

    def wait_drained(self, timeout: float) -> float:
        """Seconds waited until no message is queued or taken unacknowledged: a backlog left by an
        earlier run would be measured as this run's. Gives up (SystemExit) after `timeout`."""
        start = time.monotonic()
        told = False
        while queued := sum(self.sample().values()) + self.in_flight():
            if time.monotonic() - start > timeout:
                where = ", ".join(f"{name} {n}" for name, n in self.where_left().items() if n)
                raise SystemExit(f"the pipeline still has {queued} broker messages queued ({where}): not starting")
            if not told:
                print(f"waiting for {queued} broker messages left in the queues to drain first", file=sys.stderr)
                told = True
            time.sleep(0.5)
        return time.monotonic() - start

    def where_left(self) -> dict[str, int]:
        """What `wait_drained` counts, by queue, journal and kombu's unacknowledged records."""
        return {**{f"queue {queue}": n for queue, n in self.sample().items()}, **self._taken()}

    def in_flight(self) -> int:
        """Redis broker: messages taken by a worker and not finished: those kombu records as
        unacknowledged (the offline worker's), plus the hand-offs journaled and not yet done (transfer,
        persist and push run without kombu's record: app/pipeline/journal.py; a queued transfer batch
        is journaled too, so it counts twice, which only matters as "not zero")."""
        return sum(self._taken().values())

    def _taken(self) -> dict[str, int]:
        """`in_flight`'s parts: kombu's unacknowledged records and each queue's journal (Redis broker)."""
        if self.amqp:
            return {}
        pipe = self._redis_client().pipeline(transaction=False)
        pipe.hlen("unacked")
        for queue in self.queues:
            pipe.xlen(journal_key(queue))
        unacked, *journaled = pipe.execute()
        return {
            "unacknowledged": int(unacked),
            **{f"journal {queue}": int(n) for queue, n in zip(self.queues, journaled, strict=True)},
        }

    def _amqp_depth(self, queue: str) -> int:
        from kombu.connection import Connection

        if self._conn is None:
            self._conn = Connection(self.broker_url)
        if self._channel is None:
            self._channel = self._conn.channel()
        try:
            _, count, _ = self._channel.queue_declare(queue=queue, passive=True)
            return int(count)
        except Exception:  # a queue that does not exist closes the channel: count 0, open a new one
            self._channel = None
            return 0

    def purge(self, queue: str) -> None:
        if self.amqp:
            from kombu.connection import Connection

            with Connection(self.broker_url) as conn, contextlib.suppress(Exception):
                conn.channel().queue_purge(queue)
            return
        self._redis_client().delete(*(queue + s for s in KOMBU_PRIORITY_SUFFIXES))

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.release()
        if self._redis is not None:
            self._redis.close()

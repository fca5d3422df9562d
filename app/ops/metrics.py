"""Prometheus metrics (names after OpenIM's where it has them). Workers serve them on METRICS_PORT,
the gateway on its own port at /metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

MSGS_ACCEPTED = Counter("msg_accepted", "SendMsg requests the gateway published and answered")
SEQS_ALLOCATED = Counter("seq_allocated", "messages given a seq by transfer")
MSG_INSERT_MONGO_SUCCESS = Counter("msg_insert_mongo_success", "messages written to MongoDB (MsgInsertMongoSuccess)")
MSG_INSERT_MONGO_FAILED = Counter(
    "msg_insert_mongo_failed", "failed MongoDB write attempts, retried (MsgInsertMongoFailed)"
)

# Online push, on the gateway node that writes to the sockets.
PUSH_DELIVERIES_RECEIVED = Counter("push_deliveries_received", "push deliveries routed to this gateway node")
ONLINE_PUSH_SUCCESS = Counter("msg_online_push_success", "messages queued to recipients' sockets, once per socket")
ONLINE_PUSH_FAILED = Counter(
    "msg_online_push_failed", "messages routed to recipients with no pushable socket here any more (they pull them)"
)
ONLINE_USERS = Gauge("online_user_num", "users with at least one connection on this gateway node")
CONNECTIONS = Gauge("gateway_connections", "open client connections on this gateway node")

MSG_OPERATIONS = Counter(
    "msg_operations",
    "message operations over REST (revoke, delete, clear, read, server send), by outcome",
    ["operation", "outcome"],
)
SEND_MSG_SECONDS = Histogram(
    "send_msg_seconds",
    "SendMsg on this gateway node: from its frame read to its answer queued for the socket (the wait for"
    " its batch's linger and publish included); what a client waits beyond this is the network and the"
    " socket's write queue",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
# What the gateway's linger makes of the traffic (BATCH_LINGER_MS, BATCH_LINGER_MAX_MS): flush sizes and
# how long the publishing of one took, the answers' wait beyond the linger.
GATEWAY_FLUSH_MESSAGES = Histogram(
    "gateway_flush_messages",
    "SendMsg requests in one flush of this gateway node (every shard's batch, published together)",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
GATEWAY_FLUSH_SECONDS = Histogram(
    "gateway_flush_seconds",
    "one flush's reservations, journal and publish on this gateway node, before its SendMsgs are answered",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5),
)
QUEUE_DEPTH = Gauge("queue_depth", "messages waiting in a broker queue (read by the gateway at scrape time)", ["queue"])
TASK_SECONDS = Histogram(
    "task_seconds",
    "run time of each task on this worker",
    ["task"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TASK_FAILED = Counter("task_failed", "tasks that raised on this worker", ["task"])
# A merging worker (app/tasks/batching.py) runs many broker messages at once: how many per run.
TASK_BATCH_MESSAGES = Histogram(
    "task_batch_messages",
    "broker messages merged into one run",
    ["task"],
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000),
)

_started: dict[str, float] = {}


def watch_tasks() -> None:
    """Time every task this worker runs (Celery signals)."""
    from celery import signals

    def started(task_id: str = "", **_: Any) -> None:
        _started[task_id] = time.perf_counter()

    def finished(task_id: str = "", task: Any = None, **_: Any) -> None:
        begun = _started.pop(task_id, None)
        if begun is not None and task is not None:
            TASK_SECONDS.labels(task=task.name).observe(time.perf_counter() - begun)

    def failed(sender: Any = None, **_: Any) -> None:
        TASK_FAILED.labels(task=getattr(sender, "name", "unknown")).inc()

    signals.task_prerun.connect(started, weak=False)
    signals.task_postrun.connect(finished, weak=False)
    signals.task_failure.connect(failed, weak=False)


def serve_metrics(host: str, port: int) -> None:
    """Expose this worker's metrics over HTTP (port 0: disabled)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)


# Offline push, per provider, counted in recipients (OpenIM counts failed pushes as MsgOfflinePushFailed).
OFFLINE_PUSH_SUCCESS = Counter(
    "msg_offline_push_success", "offline recipients the push provider accepted", ["provider"]
)
OFFLINE_PUSH_FAILED = Counter(
    "msg_offline_push_failed", "offline recipients given up on: refused, or out of retries", ["provider"]
)

# Units a stage could not handle, kept in app/pipeline/dead_letters.py (exported as dead_letters_total).
WEBHOOK_CALLS = Counter(
    "webhook_calls",
    "webhook (callback) calls by outcome: ok, refused (the answer stopped it), failed (the endpoint did not answer"
    " usably), skipped (failedContinue let it go on)",
    ["callback", "outcome"],
)
WEBHOOK_SECONDS = Histogram(
    "webhook_seconds",
    "time each webhook call took",
    ["callback"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DEAD_LETTERS = Counter("dead_letters", "messages or hand-offs a stage dead-lettered, with their reason", ["stage"])

# Sockets the gateway closed to protect itself (app/ws/sockets.py; slow readers in app/ws/connections.py).
GATEWAY_SOCKETS_DROPPED = Counter(
    "gateway_sockets_dropped",
    "sockets the gateway closed to protect itself: handshake_timeout, evicted, over_cap, slow_reader",
    ["reason"],
)
GC_PAUSE_SECONDS = Histogram(
    "gc_pause_seconds",
    "pauses of Python's cyclic garbage collector, by generation (2: a full collection); the process"
    " does nothing else meanwhile (app/ops/runtime.py)",
    ["generation"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
GC_FROZEN_OBJECTS = Gauge(
    "gc_frozen_objects",
    "objects Python's cyclic collector no longer scans (gc.freeze: what existed at start and, in the"
    " gateway, what survived a young collection); it should follow the held connections, not grow alone",
)

"""Prometheus metrics (names after OpenIM's where it has them). Workers serve them on METRICS_PORT,
the gateway on its own port at /metrics."""

from __future__ import annotations

import logging

from prometheus_client import Counter, start_http_server

log = logging.getLogger(__name__)

MSGS_ACCEPTED = Counter("msg_accepted", "SendMsg requests the gateway published and answered")
SEQS_ALLOCATED = Counter("seq_allocated", "messages given a seq by transfer")
MSG_INSERT_MONGO_SUCCESS = Counter("msg_insert_mongo_success", "messages written to MongoDB (MsgInsertMongoSuccess)")
MSG_INSERT_MONGO_FAILED = Counter(
    "msg_insert_mongo_failed", "failed MongoDB write attempts, retried (MsgInsertMongoFailed)"
)


def serve_metrics(host: str, port: int) -> None:
    """Expose this worker's metrics over HTTP (port 0: disabled)."""
    if port:
        start_http_server(port, addr=host)
        log.info("metrics on http://%s:%d/metrics", host, port)

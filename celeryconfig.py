"""Celery settings, built from app.config so every process reads the same environment."""

from __future__ import annotations

from kombu.entity import Queue

from app.config import settings
from app.core.conversation import transfer_queue

broker_url = settings.effective_broker_url
_amqp = broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))

# Transfer shards must each have exactly one active consumer, so a conversation is handled in order.
_transfer_args = {"x-single-active-consumer": True} if _amqp else {}
task_queues = [
    *(Queue(transfer_queue(k), queue_arguments=_transfer_args, durable=True) for k in range(settings.transfer_shards)),
    Queue("persist", durable=True),
    Queue("push", durable=True),
    Queue("offline", durable=True),
    Queue("webhooks", durable=True),
]
task_default_queue = "push"
task_create_missing_queues = False
task_routes = {
    "persist.batch": {"queue": "persist"},
    "push.batch": {"queue": "push"},
    "offline.push": {"queue": "offline"},
    "webhooks.after": {"queue": "webhooks"},
}

task_serializer = "json"
accept_content = ["json"]
task_ignore_result = True
result_backend = None

# P1: a message is acknowledged only after its task finished; a killed worker's messages come back.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = settings.worker_prefetch
worker_hijack_root_logger = False
# Task events feed Flower; one event per batch task, so the cost is small.
worker_send_task_events = settings.celery_task_events
broker_connection_retry_on_startup = True

broker_transport_options: dict[str, object] = {}
if broker_url.startswith(("redis://", "rediss://")):
    # kombu's Redis transport, with one publishing client per channel (app/pipeline/broker_redis.py)
    broker_transport = "app.pipeline.broker_redis:Transport"
if _amqp:
    # Publisher confirms: the gateway answers SendMsg only after the broker took the message.
    broker_transport_options["confirm_publish"] = True
else:
    # Redis broker: unacknowledged messages of a dead worker are redelivered after this long.
    broker_transport_options["visibility_timeout"] = settings.broker_visibility_timeout
    # kombu sweeps for such messages only every interval x throttle seconds (100 s by default): sweep
    # every 5 s, so a dead worker's batches come back soon after the visibility timeout.
    broker_transport_options["unacked_restore_interval"] = 5
    broker_transport_options["unacked_restore_throttle"] = 1

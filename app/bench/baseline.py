"""The naive variant `python -m app bench e2e --baseline` compares the pipeline with.

One Celery task per message, as a first Celery design would do it: the gateway publishes each
SendMsg as its own task (no linger, no batch) on the `baseline` queue and answers once it is
published; the task allocates the seq (the same Lua allocator over MongoDB blocks), writes the
Redis cache and the visible max seq (the same commit script), persists the one message into its
MongoDB slot document, and pushes it to the gateway nodes where its recipients are online. No
clientMsgID dedupe, no journal, no conversation records, no offline push: it does less than the
pipeline, never more.

The gateway is the project's own (`app.gateway.Gateway` and `create_app`, the same protocol code),
given a publisher that sends one task per message instead of the shard batcher. The worker is a
plain Celery worker with Celery's default pool (prefork, one process per core).

  python -m app.baseline gateway              # GATEWAY_PORT / GATEWAY_NODE_ID as for the real gateway
  python -m app.baseline worker [--concurrency N]
"""

from __future__ import annotations

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["gateway"]:
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
from typing import Any  # noqa: E402

from celery import Celery  # noqa: E402
from kombu.entity import Queue  # noqa: E402

from app.core.constants import GROUP_CHAT, MSG_STATUS_SUCCESS  # noqa: E402
from app.core.conversation import conversation_id_for  # noqa: E402
from app.seq_lua import seq_allocator  # noqa: E402
from app.services import groups
from app.store.mongo import client as mongo  # noqa: E402
from app.store.mongo import messages  # noqa: E402
from app.store.redis import msg_cache, online

log = logging.getLogger(__name__)

QUEUE = "baseline"
TASK = "baseline.message"

# Its own Celery app on the same broker and with the same settings as the pipeline's
# (serializer, acks_late, prefetch, events), consuming only its own queue.
baseline_app = Celery("openim-baseline")
baseline_app.config_from_object("celeryconfig")
baseline_app.conf.task_queues = [Queue(QUEUE, durable=True)]
baseline_app.conf.task_default_queue = QUEUE
baseline_app.conf.task_routes = {TASK: {"queue": QUEUE}}
baseline_app.conf.include = []


def handle_message(msg: dict[str, Any]) -> int:
    """Allocate, cache, persist, push: one message, one round trip after another. Returns its seq."""
    from app.tasks.push import recipients

    conv = conversation_id_for(msg["session_type"], msg["send_id"], msg["recv_id"], msg["group_id"])
    is_group = msg["session_type"] == GROUP_CHAT
    start = seq_allocator().malloc(conv, 1, is_group)  # the pipeline's own allocator
    msg["seq"] = start + 1
    msg["status"] = MSG_STATUS_SUCCESS
    msg_cache.commit(conv, [msg], {msg["send_id"]: msg["seq"]})
    messages.write_msgs(conv, [msg])
    members = groups.members(msg["group_id"]) if is_group else None
    users = recipients(msg, members)
    by_node: dict[str, list[str]] = {}
    for user_id, entries in online.get_online(users).items():
        for node in {e.node_id for e in entries if not e.background}:
            by_node.setdefault(node, []).append(user_id)
    for node, node_users in by_node.items():
        online.publish_to_node(node, {"deliveries": [{"conversation_id": conv, "users": node_users, "msgs": [msg]}]})
    return int(msg["seq"])


@baseline_app.task(name=TASK, acks_late=True)
def baseline_message(msg: dict[str, Any]) -> int:
    return handle_message(msg)


def serve_gateway() -> None:
    """The project's gateway with one task published per SendMsg (the caller patched with gevent)."""
    from gevent.pywsgi import WSGIServer

    from app.config import settings
    from app.gateway import Gateway, create_app
    from app.ws.acceptance import Pending
    from app.ws.batcher import Answer, ShardBatcher

    class PerMessagePublisher(ShardBatcher[Pending]):
        """Publishes each message at once, in the request's own greenlet: no linger, no batch."""

        def __init__(self) -> None:
            super().__init__(lambda _batches: {}, 0.0, 1)

        def submit_with(self, shard: int, item: Pending, answer: Answer) -> None:
            try:
                baseline_app.send_task(TASK, args=[item.doc], queue=QUEUE)
            except Exception as exc:
                answer(exc)
            else:
                answer(item.ack)

    mongo.ensure_indexes()
    gateway = Gateway(settings.node_id, PerMessagePublisher())
    import gevent

    gevent.spawn(gateway.subscribe_pushes)
    gevent.spawn(gateway.renew_online_forever)
    server = WSGIServer((settings.gateway_host, settings.gateway_port), create_app(gateway), log=None)
    log.info("baseline gateway %s on port %d (pid %d)", settings.node_id, settings.gateway_port, os.getpid())
    server.serve_forever()


def run_worker(concurrency: int) -> None:
    from app.config import settings

    mongo.ensure_indexes()
    baseline_app.worker_main(
        [
            "worker",
            "-n",
            f"baseline-{os.getpid()}@%h",
            "-Q",
            QUEUE,
            "-P",
            "prefork",
            "-c",
            str(concurrency),
            "--loglevel",
            settings.log_level.upper(),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    from app.config import settings

    parser = argparse.ArgumentParser(prog="python -m app.baseline", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("gateway", help="the gateway, publishing one task per message")
    p = sub.add_parser("worker", help="the Celery worker doing allocate+cache+persist+push per message")
    p.add_argument("--concurrency", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "gateway":
        serve_gateway()
    else:
        run_worker(args.concurrency)
    return 0


if __name__ == "__main__":
    sys.exit(main())

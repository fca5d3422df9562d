"""Command line: `python -m app <command>`; see README.md for every command."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _setup_logging() -> None:
    from app.config import settings

    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_token(args: argparse.Namespace) -> int:
    from app.auth import mint_token

    print(mint_token(args.user_id, args.platform_id, ttl_seconds=args.ttl))
    return 0


def cmd_gateway(_: argparse.Namespace) -> int:
    from gevent import monkey

    monkey.patch_all()
    _setup_logging()
    from app.gateway import serve

    serve()
    return 0


WORKER_KINDS = ("transfer", "persist", "push", "offline")


def worker_argv(kind: str, extra: list[str], transfer_queues: list[str] | None = None) -> list[str]:
    from app.config import settings
    from app.conversation import transfer_queue

    if kind == "transfer":
        queues = ",".join(transfer_queues or [transfer_queue(k) for k in settings.transfer_worker_shards])
        pool = ["-P", "solo"]
    elif kind == "offline":
        queues, pool = "offline", ["-P", "threads", "-c", "8"]
    else:
        queues, pool = kind, ["-P", "solo"]
    # pid in the node name: a standby worker on the same host must not share the first one's name
    return [
        "worker",
        "-n",
        f"{kind}-{os.getpid()}@%h",
        "-Q",
        queues,
        *pool,
        "--loglevel",
        settings.log_level.upper(),
        *extra,
    ]


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging()
    from app import storage
    from app.celery_app import celery_app
    from app.config import settings
    from app.metrics import serve_metrics

    serve_metrics(settings.metrics_host, settings.metrics_port)
    if args.kind in ("transfer", "persist"):
        storage.ensure_indexes()
    if args.kind == "transfer" and not celery_app.conf.broker_url.startswith(("amqp", "pyamqp")):
        return run_leased_transfer_worker(args.celery_args)
    celery_app.worker_main(worker_argv(args.kind, args.celery_args))
    return 0


def run_leased_transfer_worker(extra: list[str]) -> int:
    """Redis broker: hold the shards' lease while consuming them (see app/shard_lease.py)."""
    from app.cache import get_broker_redis
    from app.celery_app import celery_app
    from app.config import settings
    from app.conversation import transfer_queue
    from app.shard_lease import ShardLease
    from app.tasks.transfer import replay_journal

    log = logging.getLogger("app.worker")
    queues = [transfer_queue(k) for k in settings.transfer_worker_shards]
    lease = ShardLease(get_broker_redis(), queues, settings.transfer_lease_seconds)
    lease.acquire_blocking()

    def lost(holder: str) -> None:
        # Never consume beside another worker: stop now; unacknowledged batches go back to the queue.
        log.critical("lease on %s taken by %s: exiting", ",".join(queues), holder)
        os._exit(3)

    lease.keep_renewing(lost)
    try:
        replayed = replay_journal(queues)
        if replayed:
            log.warning("replayed %d journaled batches left by a previous consumer", replayed)
        celery_app.worker_main(worker_argv("transfer", extra, queues))
    finally:
        lease.release()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from app.devstack import run_stack

    return run_stack(with_flower=not args.no_flower)


def cmd_chat(args: argparse.Namespace) -> int:
    from app.chat import run_chat

    return run_chat(args.user_id, args.peer_id, args.platform_id, args.url, args.send)


def cmd_bench(args: argparse.Namespace) -> int:
    _setup_logging()
    from app import bench

    if args.what == "allocator":
        bench.bench_allocator(args.calls)
    elif args.what == "transfer":
        bench.bench_transfer(args.messages, args.conversations, args.batch)
    elif args.what == "persist":
        bench.bench_persist(args.messages)
    else:
        bench.bench_pull()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="OpenIM-style chat pipeline on Celery")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("token", help="print a user token (HS256 JWT signed with TOKEN_SECRET)")
    p.add_argument("user_id")
    p.add_argument("platform_id", type=int)
    p.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default TOKEN_TTL_SECONDS)")
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("gateway", help="run the websocket gateway (gevent)")
    p.set_defaults(func=cmd_gateway)

    p = sub.add_parser("worker", help="run a Celery worker for one pipeline stage")
    p.add_argument("kind", choices=WORKER_KINDS)
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="extra arguments for `celery worker`")
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("up", help="start embedded Redis/MongoDB when absent, then every Procfile process")
    p.add_argument("--no-flower", action="store_true")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("chat", help="chat as a user from the terminal")
    p.add_argument("user_id")
    p.add_argument("peer_id")
    p.add_argument("--platform-id", type=int, default=7, help="OpenIM platform (default 7, Linux)")
    p.add_argument("--url", default=None, help="gateway websocket URL (default from GATEWAY_HOST/PORT)")
    p.add_argument("--send", default=None, help="send this one message, print the answer and exit")
    p.set_defaults(func=cmd_chat)

    p = sub.add_parser("bench", help="print stage throughput figures (see app/bench.py)")
    p.add_argument("what", choices=["allocator", "transfer", "persist", "pull"])
    p.add_argument("--calls", type=int, default=2000, help="allocator: calls per batch size")
    p.add_argument("--messages", type=int, default=20000, help="transfer, persist: messages in all")
    p.add_argument("--conversations", type=int, default=200, help="transfer: conversations")
    p.add_argument("--batch", type=int, default=200, help="transfer: messages per broker message")
    p.set_defaults(func=cmd_bench)

    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

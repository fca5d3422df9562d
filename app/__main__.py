"""Command line: `python -m app <command>`; see README.md for every command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any


def _setup_logging() -> None:
    from app.config import settings
    from app.ops import logs

    logs.setup(settings.log_level, settings.log_format)


def cmd_token(args: argparse.Namespace) -> int:
    from app.config import secrets
    from app.core.errors import ImError
    from app.core.validation import check_user_id
    from app.services.auth import mint_token

    try:
        check_user_id(args.user_id)
    except ImError as err:
        print(f"error: {err.message}", file=sys.stderr)
        return 2
    secrets()  # refuses (SystemExit) without usable secrets; finds `python -m app up`'s in the data folder
    print(mint_token(args.user_id, args.platform_id, ttl_seconds=args.ttl))
    return 0


def cmd_gateway(_: argparse.Namespace) -> int:
    from gevent import monkey

    from app.ops.runtime import untrack_greenlet_tree

    untrack_greenlet_tree()
    monkey.patch_all()
    _setup_logging()
    from app.ops.runtime import direct_redis_probes

    direct_redis_probes()
    from app.config import secrets

    # it signs and checks tokens: refuse to start, not to answer, without usable secrets
    logging.getLogger("app.gateway").info("token secrets from %s", secrets().source)
    from app.config import settings
    from app.ops import preflight

    preflight.run(settings, "gateway", (secrets().token_secret, secrets().admin_secret))
    from app.gateway import serve

    serve()
    return 0


WORKER_KINDS = ("transfer", "persist", "push", "offline")


def worker_argv(kind: str, extra: list[str], transfer_queues: list[str] | None = None) -> list[str]:
    from app.config import settings
    from app.core.conversation import transfer_queue

    if kind == "transfer":
        queues = ",".join(transfer_queues or [transfer_queue(k) for k in settings.transfer_worker_shards])
        pool = ["-P", "solo"]
    elif kind == "offline":
        queues, pool = "offline,webhooks", ["-P", "threads", "-c", "8"]  # both wait on slow HTTP
    elif kind == "persist" and settings.persist_concurrency > 1:
        # slot writes are idempotent and runs independent: threads overlap MongoDB round trips
        queues, pool = "persist", ["-P", "threads", "-c", str(settings.persist_concurrency)]
    elif kind == "persist":
        # its prefetch is its merge: app/tasks/batching.py takes this many hand-offs into one write
        queues, pool = kind, ["-P", "solo", "--prefetch-multiplier", str(max(1, settings.persist_batch_max))]
    else:
        queues, pool = kind, ["-P", "solo"]
    # pid in the node name: a standby worker on the same host must not share the first one's name
    return [
        "--quiet",  # no startup banner: every line a process writes is a log record
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


def tune_gc_when_ready(gen0_threshold: int) -> None:
    """app/ops/runtime.py, once the worker has started (Celery's worker_ready, in its main process,
    where the solo and threads pools run their tasks)."""
    from celery import signals

    from app.ops.runtime import tune_gc

    signals.worker_ready.connect(lambda **_: tune_gc(gen0_threshold), weak=False)


def cmd_worker(args: argparse.Namespace) -> int:
    _setup_logging()
    from app.celery_app import celery_app
    from app.config import settings
    from app.ops import logs, preflight
    from app.ops.metrics import serve_metrics, watch_tasks
    from app.pipeline.webhooks import check_webhooks
    from app.store.mongo import client as mongo

    check_webhooks()
    logs.quiet_task_lines(settings.log_task_lines or settings.log_level.upper() == "DEBUG")
    tune_gc_when_ready(settings.gc_gen0_threshold)
    serve_metrics(settings.metrics_host, settings.metrics_port)
    watch_tasks()
    if args.kind in ("transfer", "persist"):
        mongo.ensure_indexes()
    preflight.run(settings, args.kind)
    if args.kind in ("persist", "push"):
        start_journal_sweeper(args.kind, settings.broker_visibility_timeout)
        stop_unacked_records(celery_app)
    if args.kind == "transfer" and not celery_app.conf.broker_url.startswith(("amqp", "pyamqp")):
        return run_leased_transfer_worker(args.celery_args)
    try:
        celery_app.worker_main(worker_argv(args.kind, args.celery_args))
    finally:
        remove_finished_journal_entries()
    return 0


def remove_finished_journal_entries() -> None:
    """A worker stopping removes the journal entries of the hand-offs it finished (they wait a moment
    to be removed together: journal.LaterRemovals), so that nobody runs them again."""
    from app.pipeline import journal

    try:
        journal.later_removals.flush()
    except Exception:  # they are run once more by a recovery, and recognised (P2)
        logging.getLogger("app.worker").warning("could not remove finished journal entries", exc_info=True)


def cmd_preflight(args: argparse.Namespace) -> int:
    """Every process's start-up checks at once, printed; status 1 when a process would refuse."""
    from app.config import settings
    from app.ops import preflight
    from app.store.mongo import client as mongo
    from app.store.redis.client import get_redis
    from app.store.redis.keys import transfer_shards_key

    if args.create_indexes:
        mongo.ensure_indexes()
        print("MongoDB indexes created (or already there)")
    if args.record_shards:
        get_redis().set(transfer_shards_key(), settings.transfer_shards)
        print(f"TRANSFER_SHARDS recorded as {settings.transfer_shards}")
    facts = preflight.gather(settings, "gateway", record_shards=False)
    for what in facts.unreadable:
        print(f"could not read {what}")
    findings = preflight.evaluate(settings, facts)
    refused = preflight.refusals(settings, findings)
    for finding in findings:
        print(f"{'REFUSED' if finding in refused else 'warning'} [{finding.check}] {finding.message}")
    if not findings:
        print("no findings")
    return 1 if refused else 0


def start_journal_sweeper(kind: str, older_than_seconds: float) -> None:
    """Redis broker: run hand-offs whose broker message a killed worker took with it (app/pipeline/journal.py)."""
    from app.pipeline import journal

    if kind == "persist":
        from app.tasks.persist import persist_batch as task
    else:
        from app.tasks.push import push_batch as task
    journal.start_sweeper(kind, task, older_than_seconds)


def stop_unacked_records(celery_app: Any) -> None:
    """Redis broker: the journal stands in for kombu's records of unacknowledged messages (app/pipeline/journal.py)."""
    from app.pipeline import journal

    celery_app.conf.broker_transport_options = journal.without_unacked_records(
        dict(celery_app.conf.broker_transport_options)
    )


def run_leased_transfer_worker(extra: list[str]) -> int:
    """Redis broker: hold the shards' lease while consuming them (see app/pipeline/shard_lease.py)."""
    from app.celery_app import celery_app
    from app.config import settings
    from app.core.conversation import transfer_queue
    from app.pipeline.shard_lease import ShardLease
    from app.store.redis.client import get_broker_redis
    from app.tasks.transfer import guard_commits, journal_replay_step, merge_from

    log = logging.getLogger("app.worker")
    queues = [transfer_queue(k) for k in settings.transfer_worker_shards]
    lease = ShardLease(get_broker_redis(), queues, settings.transfer_lease_seconds)
    lease.acquire_blocking()

    def lost(holder: str) -> None:
        # Never consume beside another worker: stop now; unacknowledged batches go back to the queue.
        log.critical("lease on %s taken by %s: exiting", ",".join(queues), holder)
        os._exit(3)

    lease.keep_renewing(lost)
    # Commit only with a third of the lease still ahead (renewals come every third of it).
    guard_commits(lambda: lease.confirm(settings.transfer_lease_seconds / 3))
    merge_from(queues)  # its runs may take the batches waiting in the queues it alone consumes
    stop_unacked_records(celery_app)  # the gateway journals every batch; the replay below runs them
    # Before consuming, and again after each reconnection to the broker: finish what the journal holds.
    celery_app.steps["consumer"].add(journal_replay_step(queues))
    try:
        celery_app.worker_main(worker_argv("transfer", extra, queues))
    finally:
        remove_finished_journal_entries()  # before another worker may replay the journal
        lease.release()
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    from app.ops.devstack import run_stack

    return run_stack(with_flower=not args.no_flower)


def cmd_chat(args: argparse.Namespace) -> int:
    from app.cli.chat import run_chat

    return run_chat(args.user_id, args.peer_id, args.platform_id, args.url, args.send)


def cmd_bench(args: argparse.Namespace) -> int:
    _setup_logging()
    from app.bench import stages as bench

    if args.what == "allocator":
        bench.bench_allocator(args.calls)
    elif args.what == "transfer":
        bench.bench_transfer(args.messages, args.conversations, args.batch)
    elif args.what == "persist":
        bench.bench_persist(args.messages)
    elif args.what == "fanout":
        from app.bench.fanout import bench_fanout

        bench_fanout(args.members, args.online_fraction, args.fanout_messages)
    elif args.what == "connections":
        from app.bench.connections import ConnectionsConfig, bench_connections
        from app.config import settings

        url = args.url or f"ws://{settings.gateway_host}:{settings.gateway_port}"
        cfg = ConnectionsConfig(url, args.count, args.hold, args.chatting, args.rate, args.json or "")
        bench_connections(cfg)
    elif args.what == "pull":
        bench.bench_pull()
    else:
        return cmd_bench_e2e(args)
    return 0


def cmd_bench_e2e(args: argparse.Namespace) -> int:
    from app.bench.e2e.plan import E2EConfig
    from app.bench.e2e.run import run_e2e

    cfg = E2EConfig(
        users=args.users,
        conversations=args.conversations if args.conversations_set else -1,
        groups=args.groups,
        group_size=args.group_size,
        rate=args.rate,
        inflight=args.inflight,
        warm_up=args.warm_up,
        duration=args.duration,
        procs=args.procs,
        gateway=args.gateway or "",
        api=args.api or "",
        sdk_type=args.sdk_type,
        drain_timeout=args.drain_timeout,
        seed=args.seed,
        baseline=args.baseline,
        baseline_concurrency=args.baseline_concurrency,
        smoke=args.smoke,
        progress=not args.no_progress,
        json_path=args.json or "",
        plot_path=args.plot or "",
    )
    report = run_e2e(cfg)
    return 0 if report["drained"] else 1


def cmd_dead_letters(args: argparse.Namespace) -> int:
    """Operators' view of app/pipeline/dead_letters.py: list, show, redrive or drop one entry."""
    import json

    from app.ops import redrive
    from app.pipeline import dead_letters

    if args.action == "list":
        for entry in dead_letters.list_entries(args.stage, args.limit):
            when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry.time / 1000))
            print(f"{entry.id}\t{entry.stage}\t{entry.conversation or '-'}\t{when}\t{entry.reason}")
        return 0
    try:
        if args.action == "show":
            found = dead_letters.show(args.entry_id)
            if found is None:
                raise dead_letters.UnknownEntry(args.entry_id)
            print(json.dumps(found.as_dict(), indent=2, ensure_ascii=False))
        elif args.action == "redrive":
            print(f"redriven: {redrive.redrive(args.entry_id).id}")
        elif not dead_letters.drop(args.entry_id):
            raise dead_letters.UnknownEntry(args.entry_id)
        else:
            print(f"dropped: {args.entry_id}")
    except dead_letters.UnknownEntry:
        print(f"no dead letter with id {args.entry_id!r} (see `python -m app dead-letters list`)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"{args.entry_id}: {exc}", file=sys.stderr)
        return 1
    return 0


class _Conversations(int):
    """An int that remembers it was given on the command line (e2e's default depends on --users)."""


def _conversations_arg(text: str) -> int:
    return _Conversations(int(text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app", description="OpenIM-style chat pipeline on Celery")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "token", help="print a user token (HS256 JWT signed with TOKEN_SECRET, else the one in .data/secrets.env)"
    )
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

    p = sub.add_parser("preflight", help="run the start-up checks every process makes, and print what they find")
    p.add_argument("--create-indexes", action="store_true", help="create MongoDB's indexes first")
    p.add_argument("--record-shards", action="store_true", help="record this TRANSFER_SHARDS as the one in use")
    p.set_defaults(func=cmd_preflight)

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

    p = sub.add_parser(
        "bench",
        help="stage figures (app/bench/stages.py, fanout.py), or `e2e`: the running stack under websocket load",
    )
    p.add_argument("what", choices=["allocator", "transfer", "persist", "pull", "fanout", "connections", "e2e"])
    p.add_argument("--members", type=int, default=500, help="fanout: group size")
    p.add_argument("--online-fraction", type=float, default=0.5, help="fanout: share of members online")
    p.add_argument("--fanout-messages", type=int, default=200, help="fanout: messages pushed")
    p.add_argument("--count", type=int, default=10000, help="connections: connections to open (10000)")
    p.add_argument("--url", default=None, help="connections: gateway ws://host:port (default GATEWAY_HOST/PORT)")
    p.add_argument("--hold", type=float, default=10.0, help="connections: seconds to hold them open (10)")
    p.add_argument(
        "--chatting",
        type=int,
        default=0,
        help="connections: how many of them chat during the hold, in single chats two by two (0);"
        " at --rate messages/s in all (default: each sends every 5 s)",
    )
    p.add_argument("--calls", type=int, default=2000, help="allocator: calls per batch size")
    p.add_argument("--messages", type=int, default=20000, help="transfer, persist: messages in all")
    p.add_argument(
        "--conversations",
        type=_conversations_arg,
        default=200,
        help="transfer: conversations (200); e2e: single chats (default users/2, every user in one)",
    )
    p.add_argument("--batch", type=int, default=200, help="transfer: messages per broker message")
    e2e = p.add_argument_group("e2e (against the running stack: python -m app up)")
    e2e.add_argument("--users", type=int, default=200, help="users online, one websocket each (200)")
    e2e.add_argument("--groups", type=int, default=0, help="groups, created through POST /group/create_group (0)")
    e2e.add_argument("--group-size", type=int, default=10, help="members per group (10)")
    e2e.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="total messages/s (default: as fast as acknowledged); connections: see --chatting",
    )
    e2e.add_argument("--inflight", type=int, default=1, help="as fast as acknowledged: messages in flight per user")
    e2e.add_argument(
        "--warm-up",
        action="store_true",
        help="each conversation's first message sent and answered before measuring (steady-state figures)",
    )
    e2e.add_argument("--duration", type=float, default=30.0, help="seconds of sending (30)")
    e2e.add_argument("--procs", type=int, default=2, help="load processes holding the connections (2)")
    e2e.add_argument("--gateway", default=None, help="websocket URL (default ws://GATEWAY_HOST:GATEWAY_PORT)")
    e2e.add_argument("--api", default=None, help="admin REST base URL (default: the gateway's, over http)")
    e2e.add_argument(
        "--sdk-type", choices=["json", "js", "go"], default="json", help="the clients' envelope encoding (json)"
    )
    e2e.add_argument("--drain-timeout", type=float, default=120.0, help="seconds to wait for the pipeline to drain")
    e2e.add_argument("--seed", type=int, default=1, help="seed of the conversation and group plan")
    e2e.add_argument("--baseline", action="store_true", help="also run the same load through app/bench/baseline.py")
    e2e.add_argument(
        "--baseline-concurrency", type=int, default=0, help="baseline worker processes (default: one per core)"
    )
    e2e.add_argument("--smoke", action="store_true", help="a few seconds with 20 users, 10 chats, 2 groups (CI)")
    e2e.add_argument("--no-progress", action="store_true", help="no progress bar")
    e2e.add_argument("--json", default=None, metavar="PATH", help="write every figure as JSON (also connections)")
    e2e.add_argument("--plot", default=None, metavar="PATH", help="write latency and throughput plots (PNG)")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("dead-letters", help="list, show, redrive or drop what a stage dead-lettered")
    actions = p.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="one line per entry: id, stage, conversation, time, reason")
    listing.add_argument(
        "--stage", choices=["transfer", "persist", "push", "offline", "webhooks", "journal"], default=None
    )
    listing.add_argument("--limit", type=int, default=50, help="newest entries shown (50)")
    for action, text in (
        ("show", "the whole entry as JSON"),
        ("redrive", "send it through its stage again, then drop it"),
        ("drop", "forget it"),
    ):
        actions.add_parser(action, help=text).add_argument("entry_id", help="<stage>:<stream id>, as listed")
    p.set_defaults(func=cmd_dead_letters)

    args = parser.parse_args(argv)
    args.conversations_set = isinstance(getattr(args, "conversations", None), _Conversations)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())

"""Hand-offs between stages that survive the death of their consumer on the Redis broker.

kombu's Redis transport pops a message (BRPOP) before it records it as unacknowledged, and keeps a
BRPOP outstanding while the worker is busy: a worker killed then loses the message it had popped.
So on a Redis broker every hand-off is also journaled in the broker's Redis (a stream per queue,
`JOURNAL:{queue}`) until its task finished: the gateway's transfer batches (app/ws/publish.py; a
transfer worker taking over a shard replays what is left, app/tasks/transfer.py) and transfer's
hand-offs to persist and push (`send`; each consumer sweeps entries older than the visibility
timeout and runs them itself). Finished tasks' entries are removed together a moment later
(`LaterRemovals`). Every task is idempotent (transfer dedupes by clientMsgID, slots are
overwritten, a repeated push is recognised by clientMsgID), so a late duplicate is harmless.
RabbitMQ does not lose delivered messages: nothing is journaled there.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import uuid4

from kombu import serialization
from kombu.entity import maybe_delivery_mode
from kombu.utils.uuid import uuid

from app.config import settings
from app.core import compact_json
from app.pipeline import dead_letters
from app.pipeline.backoff import TRANSIENT_ERRORS
from app.pipeline.broker_redis import envelope_dumps
from app.store.redis import scripts
from app.store.redis.client import get_broker_redis
from app.store.redis.keys import journal_key

log = logging.getLogger(__name__)

JOURNALING = not settings.effective_broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))
SWEEP_EVERY_SECONDS = 5
MAX_ENTRIES = 100_000


# --- the journal itself: one stream per queue in the broker's Redis ------------------------------


def append(queue: str, payload: Any) -> str:
    """Journal one hand-off (any JSON: a transfer batch's messages, a task's arguments)."""
    entry_id = get_broker_redis().xadd(
        journal_key(queue),
        {"msgs": compact_json.dumps(payload)},
        maxlen=MAX_ENTRIES,
        approximate=True,
    )
    return str(entry_id)


def remove(queue: str, entry_id: str) -> None:
    get_broker_redis().xdel(journal_key(queue), entry_id)


def last_id(queue: str) -> str | None:
    rows = get_broker_redis().xrevrange(journal_key(queue), count=1)
    return str(rows[0][0]) if rows else None


def entries(queue: str, count: int = 500, until: str = "+") -> list[tuple[str, Any]]:
    """The oldest `count` journaled hand-offs of `queue` up to entry id (or ms time) `until`, in order."""
    rows: list[tuple[str, dict[str, str]]] = get_broker_redis().xrange(journal_key(queue), max=until, count=count) or []  # type: ignore[assignment]
    return [(str(entry_id), json.loads(fields["msgs"])) for entry_id, fields in rows]


# --- hand-offs ---------------------------------------------------------------------------------


def shown(args: list[Any], journal: list[str] | None) -> dict[str, str]:
    """What Flower shows of a hand-off: without it Celery walks every message with saferepr (a
    fifth of a transfer worker's publish)."""
    return {"argsrepr": f"[<{len(args)} arguments>]", "kwargsrepr": repr({"journal": journal})}


def send(task: Any, args: list[Any], queue: str) -> None:
    """Publish `task(*args)` on `queue`, journaled on a Redis broker (`send_many`)."""
    send_many([(task, args, queue)])


def send_many(sends: list[tuple[Any, list[Any], str]]) -> None:
    """Publish hand-offs (task, args, queue): on a Redis broker with their journal entries in one
    round trip (`publish_journaled`); on RabbitMQ, which loses no delivered message, as Celery
    sends them (journal None)."""
    if not JOURNALING:
        for task, args, queue in sends:
            task.apply_async(args=args, kwargs={"journal": None}, queue=queue, **shown(args, None))
        return
    if sends:
        publish_journaled(sends[0][0].app, [(task.name, args, queue) for task, args, queue in sends])


def publish_journaled(app: Any, sends: list[tuple[str, list[Any], str]], batches: bool = False) -> None:
    """Several task messages (task name, args, queue) and their journal entries on a Redis broker in
    one round trip (journal_publish.lua, atomic: no consumer sees a message before its entry). A
    failure raises (an outage as the caller's backoff knows it, TRANSIENT_ERRORS) and the caller
    sends them all again; should the script have run before the reply was lost, the duplicates are
    recognised. Before, entries and messages took a round trip each and kombu's producer around the
    messages: at 200 msg/s a transfer worker's two hand-offs per run were a third of its samples.

    An entry holds what its consumer's recovery runs: a hand-off's arguments (the sweepers call the
    task with them), or with `batches` a gateway batch's messages, the task's one argument (a transfer
    worker replays them as a batch)."""
    keys: list[str] = []
    argv: list[Any] = [MAX_ENTRIES]
    for name, args, queue in sends:
        pieces = task_message_pieces(app, name, args, queue)
        keys += [journal_key(queue), queue]
        argv += [compact_json.dumps(args[0] if batches else args), len(pieces), *pieces]
    if keys:
        scripts.load("journal_publish", get_broker_redis())(keys=keys, args=argv)


def task_message_pieces(app: Any, task_name: str, args: list[Any], queue: str) -> list[bytes]:
    """`task_name(*args, journal=[queue, <its entry id>])` as kombu's Redis transport writes a task
    message on `queue` (Celery's own message, as_task_v2, in kombu's envelope; the anonymous exchange
    routes by queue name, priority 0), cut where the entry's id goes: the script joins the pieces
    with it. A random marker stands for the id while the message is written. The body is JSON text
    in the envelope rather than base64 (kombu reads a message without `body_encoding` as it is), so
    that the id can be placed in it."""
    marker = uuid4().hex
    journal = [queue, marker]
    conf = app.conf
    headers, properties, body, _sent_event = app.amqp.as_task_v2(
        uuid(), task_name, args, {"journal": journal}, **shown(args, journal)
    )
    content_type, content_encoding, data = serialization.dumps(body, serializer=conf.task_serializer)
    if content_type != "application/json":
        raise RuntimeError(f"journaled hand-offs need JSON task messages, not {content_type}")
    envelope = {
        "body": data.decode(content_encoding) if isinstance(data, bytes) else data,
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": headers,
        "properties": {
            **properties,
            "delivery_mode": maybe_delivery_mode(conf.task_default_delivery_mode),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "delivery_tag": uuid(),
        },
    }
    pieces = envelope_dumps(envelope).split(marker.encode())
    if len(pieces) < 2:  # the body's kwargs hold it, whatever else changes
        raise RuntimeError(f"the task message of {task_name} does not name its journal entry")
    return pieces


def done(journal: list[str] | None) -> None:
    if journal:
        remove(journal[0], journal[1])


def done_many(journals: Sequence[list[str] | None]) -> None:
    """`done` for many hand-offs: one XDEL per queue."""
    by_queue = _ids_by_queue(journals)
    if not by_queue:
        return
    pipe = get_broker_redis().pipeline(transaction=False)
    for queue, ids in by_queue.items():
        pipe.xdel(journal_key(queue), *ids)
    pipe.execute()


class LaterRemovals:
    """Journal entries of finished hand-offs, removed a moment later, many in one XDEL per queue.

    A consumer's XDEL after each task was one of a transfer task's nine round trips to Redis and one
    of a push task's four. An entry still there after its task finished is only ever run again by a
    recovery (a dead worker's successor, a sweep past the visibility timeout), which every stage
    recognises (P2); the window grows from a round trip to at most `delay_seconds`, and a consumer
    that runs a broker pipeline anyway (transfer's look at its queues) sends them along with it."""

    def __init__(self, delay_seconds: float) -> None:
        self.delay_seconds = delay_seconds
        self._pending: list[list[str]] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, journals: list[list[str] | None]) -> None:
        taken: list[list[str]] = []
        refused: list[list[str]] = []
        for journal in journals:
            if journal:
                (taken if is_entry(journal) else refused).append(journal)
        if refused:  # not ours (a task message written by hand?): an XDEL would fail its queue's others
            log.error("not journal entries, not removed: %r", refused[:10])
        if not taken:
            return
        with self._lock:
            self._pending += taken
            if self._thread is None:
                self._thread = threading.Thread(target=self._remove_forever, name="journal-removals", daemon=True)
                self._thread.start()
        self._wake.set()

    def take(self) -> list[list[str]]:
        with self._lock:
            taken, self._pending = self._pending, []
        return taken

    def give_back(self, journals: list[list[str]]) -> None:
        """Entries whose removal failed (an outage): the next removal tries them again."""
        with self._lock:
            self._pending[:0] = journals
        self._wake.set()

    def queue_on(self, pipe: Any, taken: list[list[str]] | None = None) -> list[list[str]]:
        """Queue the pending removals (or `taken`) on a broker pipeline the caller runs anyway;
        returns them, for `give_back` should that pipeline fail and `check` of its replies. They
        add one reply per queue to the pipeline's, first."""
        taken = self.take() if taken is None else taken
        for queue, ids in _ids_by_queue(taken).items():
            pipe.xdel(journal_key(queue), *ids)
        return taken

    def flush(self) -> None:
        """Remove what is pending now (a worker's shutdown, before a replay of its own journal)."""
        taken = self.take()
        if not taken:
            return
        pipe = get_broker_redis().pipeline(transaction=False)
        self.queue_on(pipe, taken)
        try:
            replies = pipe.execute(raise_on_error=False)
        except Exception:
            self.give_back(taken)
            raise
        self.check(taken, replies)

    @staticmethod
    def check(taken: list[list[str]], replies: list[Any]) -> None:
        """The replies of `taken`'s removals: what Redis refused (not an outage: that raises, and
        the caller gives them back) is logged, not tried again; a recovery runs it once more."""
        for (queue, ids), reply in zip(_ids_by_queue(taken).items(), replies, strict=True):
            if isinstance(reply, Exception):
                log.error("could not remove %d journal entries of %s: %r", len(ids), queue, reply)

    def _remove_forever(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.delay_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:
                log.warning("removing journal entries failed; trying again", exc_info=True)
                time.sleep(1)
                self._wake.set()


REMOVE_AFTER_SECONDS = 0.1
later_removals = LaterRemovals(REMOVE_AFTER_SECONDS)


def done_later(journals: list[list[str] | None]) -> None:
    """`done_many`, within REMOVE_AFTER_SECONDS, together with other tasks' (`LaterRemovals`)."""
    later_removals.add(journals)


_ENTRY_ID = re.compile(r"\d+(-\d+)?")


def names_entry(journal: Any) -> bool:
    """Shaped as a task's `journal` argument: [queue, entry id], both non-empty strings."""
    return isinstance(journal, list) and len(journal) == 2 and all(isinstance(x, str) and x for x in journal)


def is_entry(journal: Any) -> bool:
    """[queue, stream entry id], as `publish` and `publish_journaled` name an entry."""
    return names_entry(journal) and _ENTRY_ID.fullmatch(journal[1]) is not None


def _ids_by_queue(journals: Sequence[list[str] | None]) -> dict[str, list[str]]:
    by_queue: dict[str, list[str]] = {}
    for journal in journals:
        if journal:
            by_queue.setdefault(journal[0], []).append(journal[1])
    return by_queue


def sweep_once(queue: str, run: Callable[..., Any], older_than_seconds: float) -> int:
    """Run every journaled hand-off of `queue` older than the given age; returns how many.

    An entry whose run fails for any reason but an outage is parked in the dead letters (stage
    `journal`) and the sweep goes on with the next one: one bad hand-off never holds back the
    recovery of the others. An outage (backoff.TRANSIENT_ERRORS) ends this round; the entry stays
    for the next round."""
    cutoff_ms = int((time.time() - older_than_seconds) * 1000)
    swept = 0
    while batch := entries(queue, count=100, until=str(cutoff_ms)):
        for entry_id, args in batch:
            try:
                run(*args)
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                park(queue, entry_id, args, exc)
            remove(queue, entry_id)
            swept += 1
    return swept


def park(queue: str, entry_id: str, args: Any, error: BaseException) -> None:
    """Move a journaled hand-off that keeps failing to the dead letters, with its reason."""
    log.error("journaled %s hand-off %s failed: parked in the dead letters", queue, entry_id, exc_info=error)
    dead_letters.put(
        "journal",
        f"{queue} hand-off failed: {error!r}"[:300],
        dead_letters.task_payload(queue, args),
        error=error,
        details={"queue": queue, "journalEntry": entry_id},
    )


def without_unacked_records(transport_options: dict[str, Any]) -> dict[str, Any]:
    """Broker transport options for a consumer of journaled hand-offs (transfer, persist, push) on a
    Redis broker.

    kombu keeps its own record of every message it delivered until acknowledged (a MULTI of HSET +
    ZADD on receipt, another of HDEL + ZREM on the ack: 45% of a persist worker's CPU, 24% of a push
    worker's and 10-12% of a transfer worker's at 200 msg/s, py-spy), so that a dead worker's
    messages come back after the visibility timeout. The journal already does that for these stages:
    persist's and push's sweepers run what a dead worker took, after the same timeout, and a transfer
    worker replays its shards' journal, in order, each time it takes the lease or reconnects, before
    it consumes. So kombu's records are left out there; a worker that stops cleanly still hands back
    what it had prefetched (kombu's in-memory record), and the journal keeps those in order."""
    return {**transport_options, "ack_emulation": False} if JOURNALING else transport_options


def start_sweeper(queue: str, run: Callable[..., Any], older_than_seconds: float) -> threading.Thread | None:
    """A daemon thread in the consumer's process (Redis broker only)."""
    if not JOURNALING:
        return None

    def sweep_forever() -> None:
        while True:
            time.sleep(SWEEP_EVERY_SECONDS)
            try:
                swept = sweep_once(queue, run, older_than_seconds)
                if swept:
                    log.warning("ran %d %s hand-offs whose broker message was lost", swept, queue)
            except Exception:
                log.warning("sweeping the %s journal failed; trying again", queue, exc_info=True)

    thread = threading.Thread(target=sweep_forever, name=f"journal-sweeper-{queue}", daemon=True)
    thread.start()
    return thread

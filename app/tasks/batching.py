"""Many broker messages, one run: a Celery task strategy for stages whose work merges.

Persist writes 100-slot documents: one write per document per batch costs the store the same
whether the batch holds one message of that document or fifty, and transfer hands persist one
small batch per shard batch. So the persist worker takes many broker messages (up to
`batch_max`, or what arrived within `batch_linger_s` of the first, or until the stream paused for
`batch_quiet_s`) and writes them in one go.

How it stays safe (P1), and why it is built like this:
- It is a Celery *strategy* (Celery's own hook for how a worker handles a task's messages, as
  celery-batches does): the consumer's event loop hands each message over; nothing else consumes.
- It runs only on the solo pool: the merged run happens in the consumer's thread and every
  acknowledgement is sent from that same thread after the run returned. Acks from many pool threads
  over one py-amqp connection once made RabbitMQ drop a worker (missed heartbeats).
- A broker message is acknowledged only after the run that includes it returned.
- The buffer belongs to one consumer start. Celery builds its strategies again on every (re)connection
  (the Tasks bootstep's `update_strategies`) and clears the consumer's timer entries when the
  connection closes; a message buffered on a dead connection cannot be acknowledged any more
  (its delivery tag belongs to the old channel), so that buffer is abandoned and the broker
  redelivers its messages (RabbitMQ at once; Redis from its unacknowledged set, and the journal).
  A flush scheduled on a cleared timer therefore never strands a live buffer: the new consumer
  has a new buffer and schedules its own flush.
- When the merged run raises, each call runs alone, as the task would have (a failure stays one
  broker message's), and is acknowledged after it ran, as Celery acknowledges a failed `acks_late` task.
- On a Redis broker a journaled hand-off (`journal` kwarg, app/pipeline/journal.py) is acknowledged to
  the broker as soon as it is buffered; its journal entry, removed only after the write, is what keeps
  it (a killed worker's entries are run by the sweeper, as for a message kombu lost). Reason: kombu's
  Redis transport crashes the worker (AttributeError in `_connparams` while restoring unacknowledged
  messages from a channel that already lost its connection) when the broker goes away while messages
  are held unacknowledged with a BRPOP outstanding, which a lingering buffer makes likely (seen in the
  fault suite's broker restart). RabbitMQ keeps late acknowledgement: its broker returns what is unacknowledged.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celery import Task
from celery.worker.strategy import default as default_strategy

from app.ops import metrics

log = logging.getLogger(__name__)

Call = tuple[list[Any], dict[str, Any]]  # (args, kwargs) of one broker message

_generations = itertools.count(1)


@dataclass
class Pending:
    call: Call
    ack: Callable[[], Any]
    kept: bool = False  # acknowledged when buffered: something else keeps it (see kept_elsewhere)


def decode_call(body: Any) -> Call:
    """(args, kwargs) from a protocol-2 task body `[args, kwargs, embed]`; ValueError otherwise."""
    if isinstance(body, (list, tuple)) and len(body) == 3:
        args, kwargs, _embed = body
        if isinstance(args, (list, tuple)) and isinstance(kwargs, dict):
            return list(args), kwargs
    raise ValueError(f"not a task body: {str(body)[:120]}")


class BatchedTask(Task):  # type: ignore[misc]
    """A task whose worker merges many broker messages into one `run_many` call (solo pool only).

    Called directly (`task(...)`, `task.apply`), it runs one call as any task does."""

    Strategy = "app.tasks.batching:strategy"
    batch_max = 200
    batch_linger_s = 0.05  # the longest a buffered message waits for more
    batch_quiet_s = 0.0  # ... and once nothing came for this long, the buffer is run at once (0: never)
    consumer_generation = 0  # which consumer start's buffer may still acknowledge
    buffered: list[Pending] | None = None  # the current consumer start's buffer

    def run_many(self, calls: list[Call]) -> None:
        raise NotImplementedError

    def kept_elsewhere(self, call: Call) -> bool:
        """True when something other than the broker keeps this call until it ran (then its broker
        message is acknowledged when buffered). Default: nothing does."""
        return False

    def run_one(self, call: Call) -> None:
        """One call alone, when the merged run failed. Default: the task body itself."""
        self.run(*call[0], **call[1])


def run_batch(task: BatchedTask, pending: list[Pending], current: Callable[[], bool] = lambda: True) -> None:
    """Run the buffered calls together, else one at a time; then acknowledge every message, unless
    the consumer started again meanwhile (`current()` false): their delivery tags are gone with the
    old channel and the broker redelivers them (the run is idempotent)."""
    started = time.perf_counter()
    metrics.TASK_BATCH_MESSAGES.labels(task=task.name).observe(len(pending))
    try:
        task.run_many([p.call for p in pending])
    except Exception:
        log.warning("merged %s run of %d messages failed: one at a time", task.name, len(pending), exc_info=True)
        for p in pending:
            try:
                task.run_one(p.call)
            except Exception:
                metrics.TASK_FAILED.labels(task=task.name).inc()
                # As a failed acks_late task: logged and acknowledged; on a Redis broker the
                # hand-off's journal entry stays and the sweeper runs it again (or parks it).
                log.exception("%s failed for one broker message", task.name)
    elapsed = time.perf_counter() - started
    metrics.TASK_SECONDS.labels(task=task.name).observe(elapsed)
    if not current():
        log.warning("%s: %d messages ran after a reconnection: left to redelivery", task.name, len(pending))
        return
    for p in pending:
        p.ack()
    log.debug("%s: %d broker messages in %.1f ms", task.name, len(pending), elapsed * 1000)


def consumes_queue_of(task: BatchedTask, app: Any) -> bool:
    """Whether this worker consumes the queue the task is routed to (`-Q`): Celery builds a strategy
    for every registered task, also in workers that never receive it."""
    queue = app.amqp.router.route({}, task.name, task_type=task).get("queue")
    return getattr(queue, "name", queue) in app.amqp.queues.consume_from


def strategy(task: BatchedTask, app: Any, consumer: Any, **_kwargs: Any) -> Callable[..., None]:
    """Celery calls this on every consumer start; returns the handler of each task message."""
    if type(consumer.pool).__module__ != "celery.concurrency.solo":
        # Acks must come from the consumer's thread: on another pool, one message per run as usual.
        # Said only where it costs something: a worker of another stage never receives this task.
        if consumes_queue_of(task, app):
            log.warning("%s merges broker messages only on the solo pool: one message per run", task.name)
        return default_strategy(task, app, consumer, **_kwargs)  # type: ignore[no-any-return]
    # Without an event loop Celery's timer runs callbacks in a thread of its own: acks would come
    # from there. Then every message runs as it arrives (no merging, same thread).
    linger = task.batch_linger_s if consumer.hub is not None else 0.0
    timer = consumer.timer
    generation = task.consumer_generation = next(_generations)
    # What the previous consumer start buffered: messages still unacknowledged there are redelivered
    # by the broker; those acknowledged when buffered (kept elsewhere) are carried over and run here.
    previous = task.buffered or []
    buffer: list[Pending] = [p for p in previous if p.kept]
    previous.clear()
    task.buffered = buffer
    quiet = min(task.batch_quiet_s, linger) if linger > 0 else 0.0
    # The buffer's batch number: a timer set for an earlier batch finds it flushed and does nothing.
    batch = [0]
    last_arrival = [0.0]

    def current() -> bool:
        return task.consumer_generation == generation

    def flush() -> None:
        batch[0] += 1
        if not buffer:
            return
        taken = buffer[:]
        buffer.clear()
        run_batch(task, taken, current)

    def flush_if(number: int) -> None:
        if batch[0] == number:
            flush()

    def flush_if_quiet(number: int) -> None:
        """The stream paused (nothing for `quiet`): no more is coming soon, so no longer wait."""
        if batch[0] != number:
            return
        wait = last_arrival[0] + quiet - time.monotonic()
        if wait <= 0:
            flush()
        else:
            timer.call_after(wait, flush_if_quiet, (number,))

    def start_timers() -> None:
        timer.call_after(linger, flush_if, (batch[0],))
        if quiet > 0:
            timer.call_after(quiet, flush_if_quiet, (batch[0],))

    def handler(message: Any, body: Any, ack: Any, reject: Any, callbacks: Any, **_kw: Any) -> None:
        try:
            call = decode_call(message.decode() if body is None else body)
        except Exception as exc:
            log.error("%s: unreadable broker message refused (%r)", task.name, exc)
            reject(log, consumer.connection_errors, False)
            return
        last_arrival[0] = time.monotonic()
        if task.kept_elsewhere(call):
            ack(log, consumer.connection_errors)
            buffer.append(Pending(call, lambda: None, kept=True))
        else:
            buffer.append(Pending(call, lambda: ack(log, consumer.connection_errors)))
        if len(buffer) >= task.batch_max or linger <= 0:
            flush()
        elif len(buffer) == 1:
            start_timers()

    if buffer:
        start_timers()
    return handler

"""Gateway side of the transfer queues: every shard's waiting messages flushed together, per linger window.

One flusher greenlet hands over every shard's batch in one go (one handler call: one reservation
round trip, one round trip that journals and publishes them), so a batch's cost does not grow with the
number of shards, and the shards' batches reach the transfer workers together (a worker consuming
several shards takes them into one run, app/tasks/transfer.py). Batches of one shard are handed over
in acceptance order. The handler answers each item (a value, or an Exception for that item alone, or
one Exception for a whole shard's batch); a SendMsg is answered only after the batch carrying it was
published (and confirmed, on RabbitMQ).

An item is answered through a callback run by the flusher (`submit_with`): the connection that sent
it goes on reading meanwhile, and nothing waits per message. An item still unanswered past the
batcher's deadline (a broker that stopped answering) is answered with `Overdue` by a watchdog; its
batch's own result, should it come later, is then dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult, Event

log = logging.getLogger(__name__)

T = TypeVar("T")
ShardResults = Sequence[object] | Exception
"""One shard batch's answers, item by item, or the Exception that failed the whole shard batch."""
Handler = Callable[[dict[int, list[T]]], Mapping[int, ShardResults]]
"""Called with every shard's batch (shard -> items in acceptance order); answers per shard."""
Answer = Callable[[object], None]
"""Called once with the item's result, or with the Exception that failed it."""


class Overdue(Exception):
    """The item's batch was not handled within the batcher's deadline."""


class _Entry(Generic[T]):
    __slots__ = ("item", "answer", "since")

    def __init__(self, item: T, answer: Answer, since: float) -> None:
        self.item = item
        self.answer: Answer | None = answer  # None once answered
        self.since = since


def next_linger(base: float, longest: float, last_batch: int) -> float:
    """A shard whose last batch held n messages waits up to n times the base linger for the next.

    Every broker message costs the transfer worker a few round trips of its own (fetch, unacked
    record, ack), so a busy shard is better served by fewer, fuller batches; a quiet one (one message
    at a time) keeps the short linger and its latency."""
    return min(longest, base * last_batch) if last_batch > 1 else base


def take_batches(pending: dict[int, list[T]], max_batch: int) -> dict[int, list[T]]:
    """Up to `max_batch` of each shard's oldest items, removed from `pending` (what is left stays)."""
    batches: dict[int, list[T]] = {}
    for shard in list(pending):
        items = pending[shard]
        batches[shard] = items[:max_batch]
        if len(items) > max_batch:
            pending[shard] = items[max_batch:]
        else:
            del pending[shard]
    return batches


def usable(answers: ShardResults | None, expected: int) -> ShardResults:
    """A shard's answers as the handler gave them, or the RuntimeError that stands for answers of
    the wrong kind or number (then every item of the shard fails with it)."""
    if isinstance(answers, Exception):
        return answers
    if answers is None:
        got = "nothing"
    elif not isinstance(answers, Sequence):  # a handler's bug: its annotation is not enforced
        got = f"a {type(answers).__name__}"
    elif len(answers) == expected:
        return answers
    else:
        got = str(len(answers))
    return RuntimeError(f"handler answered {got} of {expected} items")


def _settle_async_result(done: AsyncResult) -> Answer:
    def answer(result: object) -> None:
        if isinstance(result, BaseException):
            done.set_exception(result)
        else:
            done.set(result)

    return answer


class ShardBatcher(Generic[T]):
    def __init__(
        self,
        handle: Handler[T],
        linger_seconds: float,
        max_batch: int,
        max_linger_seconds: float | None = None,
        deadline_seconds: float = 0.0,
    ) -> None:
        self._handle = handle
        self._linger = linger_seconds
        self._max_linger = max(linger_seconds, max_linger_seconds or linger_seconds)
        self._max_batch = max_batch
        self._deadline = deadline_seconds  # 0: no watchdog (callers of `submit` wait with their own)
        self._watchdog: gevent.Greenlet | None = None
        self._flusher: gevent.Greenlet | None = None
        self._pending: dict[int, list[_Entry[T]]] = {}  # per shard, in acceptance order
        self._handling: list[_Entry[T]] = []  # the batches the flusher is handling now
        self._wakeup = Event()
        self._enough = Event()  # a busy linger may end: as many items wait as the last flush took
        self._enough_at = 0  # that many (0: the linger runs its course)
        self._last_flush = 0  # items the last flush took
        self.in_flight = 0  # submitted, not yet handled
        self._idle = Event()
        self._idle.set()

    def drain(self, timeout: float) -> bool:
        """Wait until every submitted item was handled (graceful shutdown); False on timeout."""
        return bool(self._idle.wait(timeout))

    def submit(self, shard: int, item: T) -> AsyncResult:
        """Queue `item` for `shard`; the result is set once its batch was handled."""
        done = AsyncResult()
        self.submit_with(shard, item, _settle_async_result(done))
        return done

    def submit_with(self, shard: int, item: T, answer: Answer) -> None:
        """Queue `item` for `shard`; `answer` is called by the flusher (or the watchdog)."""
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_forever)
        if self._deadline > 0 and self._watchdog is None:
            self._watchdog = gevent.spawn(self._watch_deadlines)
        self.in_flight += 1
        self._idle.clear()
        self._pending.setdefault(shard, []).append(_Entry(item, answer, time.monotonic()))
        self._wakeup.set()
        if self._enough_at and self.in_flight >= self._enough_at:  # while lingering, all in flight wait
            self._enough.set()

    def _flush_forever(self) -> None:
        linger = self._linger
        while True:
            self._wakeup.wait()
            self._wakeup.clear()
            if not self._pending:
                continue
            if linger > 0 and max(map(len, self._pending.values())) < self._max_batch:
                self._linger_for(linger)
            # the busiest shard sets the next linger, as if it had its own flusher
            busiest = max(map(len, self._pending.values()))
            batches = take_batches(self._pending, self._max_batch)
            handled = [entry for entries in batches.values() for entry in entries]
            self._last_flush = len(handled)
            self._handling = handled
            try:
                self._answer(batches)
            except Exception as exc:  # a bug in answering: its items learn it now, not at the deadline
                log.exception("answering a flush of %d items failed", len(handled))
                for entry in handled:
                    _settle(entry, exc)
            finally:
                self._handling = []
                self.in_flight -= len(handled)
                if self.in_flight == 0:
                    self._idle.set()
            if self._pending:
                # Beyond a full batch: at once. What came while this flush was handled waits for the
                # next linger, so it does not go out as a flush of its own (a broker message per shard).
                self._wakeup.set()
            linger = next_linger(self._linger, self._max_linger, busiest)

    def _linger_for(self, linger: float) -> None:
        """Wait `linger` for more items. A busy linger (longer than the base) ends early once as many
        items wait as the last flush took: senders that wait for their answers before sending again
        (one message in flight each) have all sent by then, and lingering on would only delay them;
        a steady stream reaches that count about when the linger ends anyway."""
        if linger <= self._linger or self._last_flush <= 1:
            gevent.sleep(linger)
            return
        if self.in_flight >= self._last_flush:
            return
        self._enough.clear()
        self._enough_at = self._last_flush
        try:
            self._enough.wait(linger)
        finally:
            self._enough_at = 0

    def _answer(self, batches: dict[int, list[_Entry[T]]]) -> None:
        try:
            results = self._handle({shard: [entry.item for entry in entries] for shard, entries in batches.items()})
        except Exception as exc:  # the whole flush failed: every item learns it
            log.error("handling %d shard batches failed: %r", len(batches), exc)
            results = {shard: exc for shard in batches}
        if not isinstance(results, Mapping):  # a handler's bug, as in usable()
            wrong = RuntimeError(f"handler answered a {type(results).__name__}, not answers per shard")
            results = {shard: wrong for shard in batches}
        for shard, entries in batches.items():
            answers = usable(results.get(shard), len(entries))
            if isinstance(answers, Exception):
                log.error("handling %d items for shard %d failed: %r", len(entries), shard, answers)
                for entry in entries:
                    _settle(entry, answers)
                continue
            for entry, result in zip(entries, answers, strict=True):
                _settle(entry, result)

    def _watch_deadlines(self) -> None:
        """Answer `Overdue` to what waits past the deadline, at most a quarter of it late."""
        while True:
            gevent.sleep(min(1.0, self._deadline / 4))
            too_old = time.monotonic() - self._deadline
            waiting = [*self._handling, *(entry for entries in self._pending.values() for entry in entries)]
            overdue = [e for e in waiting if e.answer is not None and e.since < too_old]
            if overdue:
                log.error("%d items unanswered after %.0f s", len(overdue), self._deadline)
            for entry in overdue:
                _settle(entry, Overdue(f"not handled within {self._deadline:.0f} s"))


def _settle(entry: _Entry[T], result: object) -> None:
    answer, entry.answer = entry.answer, None
    if answer is None:  # answered already (overdue)
        return
    try:
        answer(result)
    except Exception:  # one answer's failure is not the batch's, nor the other items'
        log.exception("answering a handled item failed")

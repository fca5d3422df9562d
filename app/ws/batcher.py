"""Gateway side of the transfer queues: one broker message per shard per short linger window.

Each shard has a single flusher greenlet, so batches of one shard are handed over in acceptance
order. The handler answers each item (a value, or an Exception for that item alone); a SendMsg is
answered only after the batch carrying it was published (and confirmed, on RabbitMQ).

An item is answered through a callback run by the flusher (`submit_with`): the connection that sent
it goes on reading meanwhile, and nothing waits per message. An item still unanswered past the
batcher's deadline (a broker that stopped answering) is answered with `Overdue` by a watchdog; its
batch's own result, should it come later, is then dropped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult, Event

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[int, list[T]], Sequence[object]]
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


class _Shard(Generic[T]):
    def __init__(self) -> None:
        self.pending: list[_Entry[T]] = []
        self.handling: list[_Entry[T]] = []  # the batch the flusher is handling now
        self.wakeup = Event()


def next_linger(base: float, longest: float, last_batch: int) -> float:
    """A shard whose last batch held n messages waits up to n times the base linger for the next.

    Every broker message costs the transfer worker a few round trips of its own (fetch, unacked
    record, ack), so a busy shard is better served by fewer, fuller batches; a quiet one (one message
    at a time) keeps the short linger and its latency."""
    return min(longest, base * last_batch) if last_batch > 1 else base


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
        self._shards: dict[int, _Shard[T]] = {}
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
        """Queue `item` for `shard`; `answer` is called by the shard's flusher (or the watchdog)."""
        state = self._shards.get(shard)
        if state is None:
            state = self._shards[shard] = _Shard()
            gevent.spawn(self._flush_forever, shard, state)
        if self._deadline > 0 and self._watchdog is None:
            self._watchdog = gevent.spawn(self._watch_deadlines)
        self.in_flight += 1
        self._idle.clear()
        state.pending.append(_Entry(item, answer, time.monotonic()))
        state.wakeup.set()

    def _flush_forever(self, shard: int, state: _Shard[T]) -> None:
        linger = self._linger
        while True:
            state.wakeup.wait()
            state.wakeup.clear()
            if len(state.pending) < self._max_batch and linger > 0:
                gevent.sleep(linger)
            flushed = len(state.pending)
            while state.pending:
                batch, state.pending = state.pending[: self._max_batch], state.pending[self._max_batch :]
                state.handling = batch
                try:
                    self._answer(shard, batch)
                finally:
                    state.handling = []
                    self.in_flight -= len(batch)
                    if self.in_flight == 0:
                        self._idle.set()
            linger = next_linger(self._linger, self._max_linger, flushed)

    def _answer(self, shard: int, batch: list[_Entry[T]]) -> None:
        try:
            results = list(self._handle(shard, [entry.item for entry in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"handler answered {len(results)} of {len(batch)} items")
        except Exception as exc:  # the whole batch failed: every item learns it
            log.error("handling %d items for shard %d failed: %r", len(batch), shard, exc)
            for entry in batch:
                _settle(entry, exc)
            return
        for entry, result in zip(batch, results, strict=True):
            _settle(entry, result)

    def _watch_deadlines(self) -> None:
        """Answer `Overdue` to what waits past the deadline, at most a quarter of it late."""
        while True:
            gevent.sleep(min(1.0, self._deadline / 4))
            too_old = time.monotonic() - self._deadline
            for shard, state in list(self._shards.items()):
                overdue = [e for e in (*state.handling, *state.pending) if e.answer is not None and e.since < too_old]
                if overdue:
                    log.error("%d items for shard %d unanswered after %.0f s", len(overdue), shard, self._deadline)
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

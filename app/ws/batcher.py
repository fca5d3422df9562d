"""Gateway side of the transfer queues: one broker message per shard per short linger window.

Each shard has a single flusher greenlet, so batches of one shard are handed over in acceptance
order. The handler answers each item (a value, or an Exception for that item alone); a SendMsg is
answered only after the batch carrying it was published (and confirmed, on RabbitMQ).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import gevent
from gevent.event import AsyncResult, Event

log = logging.getLogger(__name__)

T = TypeVar("T")
Handler = Callable[[int, list[T]], Sequence[object]]


class _Shard(Generic[T]):
    def __init__(self) -> None:
        self.pending: list[tuple[T, AsyncResult]] = []
        self.wakeup = Event()


def next_linger(base: float, longest: float, last_batch: int) -> float:
    """A shard whose last batch held n messages waits up to n times the base linger for the next.

    Every broker message costs the transfer worker a few round trips of its own (fetch, unacked
    record, ack), so a busy shard is better served by fewer, fuller batches; a quiet one (one message
    at a time) keeps the short linger and its latency."""
    return min(longest, base * last_batch) if last_batch > 1 else base


class ShardBatcher(Generic[T]):
    def __init__(
        self, handle: Handler[T], linger_seconds: float, max_batch: int, max_linger_seconds: float | None = None
    ) -> None:
        self._handle = handle
        self._linger = linger_seconds
        self._max_linger = max(linger_seconds, max_linger_seconds or linger_seconds)
        self._max_batch = max_batch
        self._shards: dict[int, _Shard[T]] = {}
        self.in_flight = 0  # submitted, not yet answered
        self._idle = Event()
        self._idle.set()

    def drain(self, timeout: float) -> bool:
        """Wait until every submitted item was answered (graceful shutdown); False on timeout."""
        return bool(self._idle.wait(timeout))

    def submit(self, shard: int, item: T) -> AsyncResult:
        """Queue `item` for `shard`; the result is set once its batch was handled."""
        state = self._shards.get(shard)
        if state is None:
            state = self._shards[shard] = _Shard()
            gevent.spawn(self._flush_forever, shard, state)
        done = AsyncResult()
        self.in_flight += 1
        self._idle.clear()
        state.pending.append((item, done))
        state.wakeup.set()
        return done

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
                self._flush(shard, batch)
            linger = next_linger(self._linger, self._max_linger, flushed)

    def _flush(self, shard: int, batch: list[tuple[T, AsyncResult]]) -> None:
        try:
            self._answer(shard, batch)
        finally:
            self.in_flight -= len(batch)
            if self.in_flight == 0:
                self._idle.set()

    def _answer(self, shard: int, batch: list[tuple[T, AsyncResult]]) -> None:
        try:
            results = list(self._handle(shard, [item for item, _ in batch]))
            if len(results) != len(batch):
                raise RuntimeError(f"handler answered {len(results)} of {len(batch)} items")
        except Exception as exc:  # the whole batch failed: every waiter learns it
            log.error("handling %d items for shard %d failed: %r", len(batch), shard, exc)
            for _, done in batch:
                done.set_exception(exc)
            return
        for (_, done), result in zip(batch, results, strict=True):
            if isinstance(result, Exception):
                done.set_exception(result)
            else:
                done.set(result)

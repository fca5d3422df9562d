"""Gateway side of the transfer queues: one broker message per shard per short linger window.

Each shard has a single flusher greenlet, so batches of one shard are published in acceptance order;
a SendMsg is answered only after the batch carrying it was published (and confirmed, on RabbitMQ).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult, Event

log = logging.getLogger(__name__)

Publish = Callable[[int, list[dict[str, Any]]], None]


class _Shard:
    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, Any], AsyncResult]] = []
        self.wakeup = Event()


class ShardBatcher:
    def __init__(self, publish: Publish, linger_seconds: float, max_batch: int) -> None:
        self._publish = publish
        self._linger = linger_seconds
        self._max_batch = max_batch
        self._shards: dict[int, _Shard] = {}

    def submit(self, shard: int, msg: dict[str, Any]) -> AsyncResult:
        """Queue `msg` for `shard`; the result is set once it was published (or failed to be)."""
        state = self._shards.get(shard)
        if state is None:
            state = self._shards[shard] = _Shard()
            gevent.spawn(self._flush_forever, shard, state)
        done = AsyncResult()
        state.pending.append((msg, done))
        state.wakeup.set()
        return done

    def _flush_forever(self, shard: int, state: _Shard) -> None:
        while True:
            state.wakeup.wait()
            state.wakeup.clear()
            if len(state.pending) < self._max_batch and self._linger > 0:
                gevent.sleep(self._linger)
            while state.pending:
                batch, state.pending = state.pending[: self._max_batch], state.pending[self._max_batch :]
                try:
                    self._publish(shard, [msg for msg, _ in batch])
                except Exception as exc:  # the broker refused or is gone: every waiter learns it
                    log.error("publishing %d messages to shard %d failed: %r", len(batch), shard, exc)
                    for _, done in batch:
                        done.set_exception(exc)
                else:
                    for _, done in batch:
                        done.set(True)

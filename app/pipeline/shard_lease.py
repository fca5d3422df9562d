"""One consumer per transfer shard when the broker is Redis (RabbitMQ uses x-single-active-consumer).

A transfer worker takes a lease on all its shards at once before it consumes (all or nothing, so two
workers wanting overlapping shards never deadlock), renews it while it runs, and exits at once if
another worker holds it (it must never consume beside another). A second worker started for the
same shards waits. A killed worker's lease expires after TRANSFER_LEASE_SECONDS; the next holder
first replays the transfer journal (batches published but never handed off), then consumes (P3).

A worker that is alive but stalled (a VM pause, SIGSTOP, a starved process) can outlive its lease
while it holds a batch: the next holder replays that batch too. So before each commit the worker
confirms the lease is still its own for a while yet (`confirm`), by its own clock, which started
counting before Redis did, and stops instead of committing when it is not: the same clientMsgID
never gets a second seq from two workers (P2).
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Callable

import redis

from app.store.redis import scripts
from app.store.redis.keys import lease_key

log = logging.getLogger(__name__)


class LeaseLost(RuntimeError):
    pass


class ShardLease:
    def __init__(self, client: redis.Redis, queues: list[str], ttl_seconds: int = 15) -> None:
        self.client = client
        self.queues = queues
        self.ttl = ttl_seconds
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._keys = [lease_key(q) for q in queues]
        self._acquire = scripts.load("lease_acquire_all", client)  # all or nothing: "" or a holder
        self._release = scripts.load("lease_release", client)
        self._stop = threading.Event()
        self._valid_until = 0.0  # monotonic time our lease surely lasts until
        self._on_lost: Callable[[str], None] | None = None

    def try_acquire(self) -> str:
        """Take or renew every lease; returns "" on success, else who holds one of them."""
        asked = time.monotonic()  # Redis starts its TTL after this: our reckoning ends first
        holder = self._acquire(keys=self._keys, args=[self.owner, self.ttl])
        holder = holder.decode() if isinstance(holder, bytes) else str(holder)
        if not holder:
            self._valid_until = max(self._valid_until, asked + self.ttl)
        return holder

    def seconds_left(self) -> float:
        return self._valid_until - time.monotonic()

    def confirm(self, margin_seconds: float) -> None:
        """Return only while the lease is surely ours for `margin_seconds` more: renew it now if the
        renewals fell behind; if someone else took it, call the lost handler (which exits) or raise."""
        if self.seconds_left() > margin_seconds:
            return
        holder = self.try_acquire()
        if holder:
            if self._on_lost is not None:
                self._on_lost(holder)
            raise LeaseLost(f"lease on {','.join(self.queues)} taken by {holder}")

    def acquire_blocking(self, poll_seconds: float = 1.0) -> None:
        waited_since = time.monotonic()
        last_log = 0.0
        while True:
            holder = self.try_acquire()
            if not holder:
                log.info("took the lease on %s as %s", ",".join(self.queues), self.owner)
                return
            if time.monotonic() - last_log > 10:
                log.warning(
                    "waiting for %s: leased by %s (waited %.0fs)",
                    ",".join(self.queues),
                    holder,
                    time.monotonic() - waited_since,
                )
                last_log = time.monotonic()
            time.sleep(poll_seconds)

    def keep_renewing(self, on_lost: Callable[[str], None]) -> threading.Thread:
        """Renew every third of the TTL; a lease taken by someone else calls on_lost(holder)."""
        self._on_lost = on_lost

        def renew() -> None:
            while not self._stop.wait(self.ttl / 3):
                try:
                    holder = self.try_acquire()
                except redis.RedisError:
                    log.warning("could not renew the transfer lease", exc_info=True)
                    continue
                if holder:
                    on_lost(holder)
                    return

        thread = threading.Thread(target=renew, name="transfer-lease", daemon=True)
        thread.start()
        return thread

    def release(self) -> None:
        self._stop.set()
        try:
            self._release(keys=self._keys, args=[self.owner])
        except redis.RedisError:
            log.warning("could not release the transfer lease; it expires in %ds", self.ttl)

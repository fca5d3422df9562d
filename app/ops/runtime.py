"""The Python runtime of our long-running processes (gateway, workers), set once they have started."""

from __future__ import annotations

import gc
import logging
import os
import select
import time
import types
from typing import Any

log = logging.getLogger(__name__)

SLOW_COLLECTION_SECONDS = 0.1  # a collection pausing the process this long is logged (a stall of every socket)


def tune_gc(gen0_threshold: int) -> None:
    """Python's cyclic collector runs every 700 allocations by default, and its older generations
    rescan every long-lived object (sockets, greenlets, modules): 14% of the gateway's CPU under
    load, measured with gc.callbacks. Once started, what exists is frozen (never scanned again) and
    the youngest generation holds `gen0_threshold` allocations before a collection; 0 keeps
    Python's defaults. Reference counting still frees everything that is not in a cycle at once."""
    if gen0_threshold <= 0:
        return
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(gen0_threshold, gen1, gen2)
    log.debug("gc: %d objects frozen, thresholds %s", gc.get_freeze_count(), gc.get_threshold())


class _ProbePoll:
    """select.poll for redis-py's readiness probes in a gevent process: a zero timeout (a probe that
    cannot block) asks the OS's poll directly; any other timeout waits in gevent's cooperative poll."""

    def __init__(self, os_poll: Any, gevent_poll: Any) -> None:
        self._os_poll, self._gevent_poll = os_poll, gevent_poll
        self._registered: list[tuple[Any, int]] = []

    def register(self, fd: Any, eventmask: int = select.POLLIN | select.POLLPRI | select.POLLOUT) -> None:
        self._registered.append((fd, eventmask))

    def poll(self, timeout: float | None = None) -> list[tuple[int, int]]:
        poller = self._os_poll() if timeout == 0 else self._gevent_poll()
        for fd, eventmask in self._registered:
            poller.register(fd, eventmask)
        return list(poller.poll(timeout))


def direct_redis_probes() -> None:
    """redis-py checks with a zero-timeout select.poll that a pooled connection holds no stray reply
    before every command. Under gevent's monkey-patching that poll goes through the hub (10 us
    instead of 0.8, and 8% of the gateway's CPU at 200 msg/s, py-spy): give redis-py's reply parser
    a select module whose zero-timeout polls ask the OS. Call after gevent's monkey.patch_all()."""
    from gevent import monkey

    if not monkey.is_module_patched("select"):
        return
    from redis._parsers import hiredis as redis_parser

    os_select = types.ModuleType("select")
    os_select.__dict__.update(vars(select))
    os_poll, gevent_poll = monkey.get_original("select", "poll"), select.poll
    os_select.poll = lambda: _ProbePoll(os_poll, gevent_poll)  # type: ignore[attr-defined]
    redis_parser.select = os_select  # type: ignore[attr-defined]


def untrack_greenlet_tree() -> None:
    """gevent records, for every greenlet it spawns, the stack that spawned it (up to 10 frames copied
    as gevent `_Frame` objects) and its spawner's locals, read only by debugging tools: 33 GC-tracked
    objects per websocket (three or four greenlets each) for every full collection to scan. Off,
    unless GEVENT_TRACK_GREENLET_TREE says otherwise; call before any greenlet is spawned."""
    if os.environ.get("GEVENT_TRACK_GREENLET_TREE") is None:
        import gevent

        gevent.config.track_greenlet_tree = False


class GcWatch:
    """Every cyclic collection's pause, by generation (gc.callbacks), as a metric; a pause over
    SLOW_COLLECTION_SECONDS is logged with what the collector holds. While it runs the process does
    nothing else: in the gateway every socket waits (acks, pushes, pings).

    With `freeze_survivors`, whatever survives a young collection (generation 0 or 1) is frozen at
    its end: no later collection scans it again. A full collection's pause is proportional to what
    it scans: 10,000 held websockets were 1.8 million objects and 1.4 s. Frozen objects are still
    freed by reference counting (a websocket's, once closed: tests/integration/test_gateway_gc.py);
    what could never be freed is a frozen object that later ends up in a reference cycle, which is
    why the gateway's connections are kept free of them, and why `gc_frozen_objects` is a metric."""

    def __init__(self, freeze_survivors: bool = False) -> None:
        # imported here: the gateway imports this module before gevent patches threading
        from app.ops import metrics

        self._pauses = metrics.GC_PAUSE_SECONDS
        self._frozen = metrics.GC_FROZEN_OBJECTS
        self.freeze_survivors = freeze_survivors
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = str(info.get("generation", ""))
        self._pauses.labels(generation=generation).observe(pause)
        if self.freeze_survivors and info.get("generation") in (0, 1):
            # the collection is over: the young generations hold exactly its survivors (its cyclic
            # garbage is freed), and they join the frozen objects
            gc.freeze()
            self._frozen.set(gc.get_freeze_count())
        if pause >= SLOW_COLLECTION_SECONDS:
            log.warning(
                "gc: generation %s collection paused the process %.0f ms (%d collected; counts %s, %d frozen)",
                generation,
                pause * 1000,
                info.get("collected", 0),
                gc.get_count(),
                gc.get_freeze_count(),
            )


def watch_gc(freeze_survivors: bool = False) -> GcWatch:
    """Install the collection-pause metric once per process (freezing young collections' survivors
    if asked: see GcWatch); returns the installed watcher."""
    for callback in gc.callbacks:
        if isinstance(callback, GcWatch):
            callback.freeze_survivors = freeze_survivors
            return callback
    watcher = GcWatch(freeze_survivors)
    gc.callbacks.append(watcher)
    return watcher


def thaw_now() -> int:
    """Unfreeze, collect everything once and freeze again: frees any reference cycle that formed
    among frozen objects (which no other collection scans); returns the objects it freed."""
    gc.unfreeze()
    try:
        return gc.collect()
    finally:
        gc.freeze()


def thaw_forever(every_seconds: float, sleep: Any) -> None:
    """With survivors frozen (GcWatch), a cycle formed later among frozen objects would be kept for
    good: every `every_seconds` one full collection over everything bounds that (a pause as long as
    a full collection without freezing: ~0.8-0.9 s at 10,000 held websockets). What it frees is
    logged: a count that keeps growing from one thaw to the next is a leak to look into."""
    while True:
        sleep(every_seconds)
        started = time.perf_counter()
        freed = thaw_now()
        log.info(
            "gc: thawed and collected everything: %d objects freed in %.0f ms, %d frozen again",
            freed,
            (time.perf_counter() - started) * 1000,
            gc.get_freeze_count(),
        )

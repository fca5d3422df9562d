"""The Python runtime of our long-running processes (gateway, workers), set once they have started."""

from __future__ import annotations

import gc
import logging
import os
import time
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
    nothing else: in the gateway every socket waits (acks, pushes, pings)."""

    def __init__(self) -> None:
        # imported here: the gateway imports this module before gevent patches threading
        from app.ops import metrics

        self._pauses = metrics.GC_PAUSE_SECONDS
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        generation = str(info.get("generation", ""))
        self._pauses.labels(generation=generation).observe(pause)
        if pause >= SLOW_COLLECTION_SECONDS:
            log.warning(
                "gc: generation %s collection paused the process %.0f ms (%d collected; counts %s, %d frozen)",
                generation,
                pause * 1000,
                info.get("collected", 0),
                gc.get_count(),
                gc.get_freeze_count(),
            )


def watch_gc() -> GcWatch:
    """Install the collection-pause metric once per process; returns the installed watcher."""
    for callback in gc.callbacks:
        if isinstance(callback, GcWatch):
            return callback
    watcher = GcWatch()
    gc.callbacks.append(watcher)
    return watcher

"""The Python runtime of our long-running processes (gateway, workers), set once they have started."""

from __future__ import annotations

import gc
import logging
import select
import types
from typing import Any

log = logging.getLogger(__name__)


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

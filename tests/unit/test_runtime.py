"""app/ops/runtime.py: the cyclic collector's settings in our long-running processes."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.ops.runtime import tune_gc


@pytest.fixture
def gc_restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_started_objects_are_frozen_and_collections_rarer(gc_restored: None) -> None:
    gc.unfreeze()
    _, gen1, gen2 = gc.get_threshold()
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, gen1, gen2)
    assert gc.get_freeze_count() > 1000  # this process's modules and objects, out of every scan


def test_zero_keeps_pythons_defaults(gc_restored: None) -> None:
    gc.unfreeze()
    before = gc.get_threshold()
    tune_gc(0)
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0


# run in a process of its own: gevent's monkey-patching cannot be undone in the test process
_PROBE_SCRIPT = """
import json, socket, sys, time
from gevent import monkey
monkey.patch_all()
import gevent, greenlet
from app.ops.runtime import direct_redis_probes
if sys.argv[1] == "direct":
    direct_redis_probes()
import redis
from redis._parsers.hiredis import _socket_can_read

client = redis.Redis.from_url(sys.argv[2])
client.set("runtime-probe-test", "1")  # a real command through the pool's readiness probe
assert client.get("runtime-probe-test") == b"1"
a, b = socket.socketpair()
switches = []
greenlet.settrace(lambda event, args: switches.append(event))
idle = any(_socket_can_read(a, 0) for _ in range(200))
b.send(b"x")
readable = _socket_can_read(a, 0)
greenlet.settrace(None)
c, d = socket.socketpair()
ticks = []
ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.01)) for _ in range(1000)])
gevent.sleep(0)
started = time.monotonic()
waited_readable = _socket_can_read(c, 0.3)  # nothing comes: waits 0.3 s, cooperatively
waited = time.monotonic() - started
ticker.kill()
print(json.dumps({"switches": len(switches), "idle": idle, "readable": readable,
                  "waited_readable": waited_readable, "waited": waited, "ticks": len(ticks)}))
"""


def _probe(mode: str) -> dict[str, Any]:
    from tests.conftest import REDIS_URL

    out = subprocess.run(
        [sys.executable, "-c", _PROBE_SCRIPT, mode, REDIS_URL],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_redis_readiness_probes_ask_the_os_without_a_hub_round_trip() -> None:
    patched, direct = _probe("gevent"), _probe("direct")
    # gevent's own poll switches to the hub and back for every probe; ours does not switch at all
    assert patched["switches"] >= 200
    assert direct["switches"] == 0
    for result in (patched, direct):
        assert result["idle"] is False and result["readable"] is True
        # a probe that waits still waits cooperatively: other greenlets ran meanwhile
        assert result["waited_readable"] is False and result["waited"] >= 0.25
        assert result["ticks"] >= 5


def test_every_collection_pause_is_a_metric_and_a_slow_one_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    from app.ops import metrics, runtime

    watcher = runtime.watch_gc()
    try:
        assert runtime.watch_gc() is watcher and gc.callbacks.count(watcher) == 1  # installed once

        def full_count() -> float:
            for metric in metrics.GC_PAUSE_SECONDS.collect():
                for sample in metric.samples:
                    if sample.name.endswith("_count") and sample.labels == {"generation": "2"}:
                        return sample.value
            return 0.0

        before = full_count()
        gc.collect()
        assert full_count() == before + 1
        caplog.set_level("WARNING", logger="app.ops.runtime")
        watcher("start", {"generation": 2})
        watcher._started -= 0.5  # as if that collection had taken half a second
        watcher("stop", {"generation": 2, "collected": 3})
        assert "generation 2 collection paused the process 500 ms" in caplog.text
    finally:
        gc.callbacks.remove(watcher)


def test_survivors_of_a_young_collection_are_frozen_when_asked(gc_restored: None) -> None:
    from prometheus_client import REGISTRY

    from app.ops import runtime

    watcher = runtime.watch_gc(freeze_survivors=True)
    try:
        gc.unfreeze()
        kept = [[i] for i in range(1000)]  # young, alive
        gc.collect(0)
        frozen = gc.get_freeze_count()
        assert frozen >= 1000 and gc.get_count()[0] < 100
        assert abs((REGISTRY.get_sample_value("gc_frozen_objects") or 0) - frozen) < 100  # set at the freeze
        del kept  # frozen objects are still freed by reference counting
        assert gc.get_freeze_count() <= frozen - 1000
        gc.unfreeze()
        gc.collect(2)  # a full collection freezes nothing
        assert gc.get_freeze_count() == 0
    finally:
        watcher.freeze_survivors = False
        gc.callbacks.remove(watcher)


def test_a_thaw_frees_a_cycle_that_formed_among_frozen_objects(gc_restored: None) -> None:
    import weakref

    from app.ops.runtime import thaw_now

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a reference cycle, alive when frozen
    gc.collect()
    gc.freeze()
    alive = weakref.ref(a)
    del a, b  # garbage now, but frozen: no ordinary collection scans it
    gc.collect()
    assert alive() is not None
    assert thaw_now() >= 2
    assert alive() is None
    assert gc.get_freeze_count() > 0  # what lives is frozen again

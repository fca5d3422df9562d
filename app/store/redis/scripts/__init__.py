"""The project's Lua scripts, one `.lua` file each beside this module, registered once per client.

redis-py's Script runs EVALSHA and loads the script on NOSCRIPT (on a pipeline: SCRIPT EXISTS, then
LOAD what is missing, before the pipeline runs), so the text crosses the wire only when Redis lacks it.
`pipeline()` skips that SCRIPT EXISTS round trip (two per transfer batch): it runs EVALSHA
straight away and, only when Redis answers NOSCRIPT (it restarted or flushed its scripts), loads
them and runs the pipeline again. On a single server it is a lean pipeline (no redis-py command
machinery per queued script: transfer queues one or two per conversation of a batch).

On a Redis Cluster every script's keys lie in one slot (keys.py hash-tags them; tests/unit checks
each call site). A cluster pipeline cannot load scripts before it runs, and a replica promoted by a
failover holds none (Redis 7 does not replicate SCRIPT LOAD), so there a queued script is sent as
EVAL with its text: Redis caches it by digest, and nothing can answer NOSCRIPT mid-pipeline.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import redis
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

from app.store.redis.lean import LeanPipeline

HERE = Path(__file__).resolve().parent

_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = weakref.WeakKeyDictionary()


class ClusterScript(Script):
    """A Script whose calls queued on a cluster pipeline go as EVAL (see the module's docstring);
    direct calls are EVALSHA, routed to the keys' slot, loading the script on NOSCRIPT."""

    def __call__(
        self,
        keys: Sequence[Any] | None = None,
        args: Iterable[Any] | None = None,
        client: Any = None,
    ) -> Any:
        keys, args = list(keys or []), list(args or [])
        if isinstance(client, ClusterPipeline):
            # Routed by its first key here: left to itself, a cluster pipeline asks the server for a
            # script's keys (COMMAND GETKEYS), one round trip per queued script (4.5x slower, README).
            # A stale slot map only costs a MOVED, which the pipeline follows.
            options = {"target_nodes": client.get_node_from_key(keys[0])} if keys else {}
            return client.execute_command("EVAL", self.script, len(keys), *keys, *args, **options)
        return super().__call__(keys=keys, args=args, client=client)


@functools.cache
def source(name: str) -> str:
    """The text of `<name>.lua` (read once per process)."""
    return (HERE / f"{name}.lua").read_text(encoding="utf-8")


def load(name: str, client: redis.Redis) -> Script:
    """`<name>.lua` registered on `client`; call it with keys=, args= and, to queue it on a
    pipeline, client=pipeline."""
    scripts = _registered.setdefault(client, {})
    if name not in scripts:
        if isinstance(client, RedisCluster):
            scripts[name] = ClusterScript(client, source(name))
        else:
            scripts[name] = client.register_script(source(name))
    return scripts[name]


class ScriptPipeline(Protocol):
    """What the callers of `pipeline()` use of either kind: scripts queued through `call`, SETs."""

    def set(self, name: str, value: str | int, *, ex: int | None = None, nx: bool = False) -> Any: ...
    def execute(self) -> list[Any]: ...


class LeanScriptsPipeline(LeanPipeline):
    """A lean pipeline (app/store/redis/lean.py) that assumes its scripts are loaded: EVALSHA straight
    away, no SCRIPT EXISTS first. On NOSCRIPT none of its EVALSHAs ran; the scripts are loaded and the
    whole pipeline runs again, so only queue commands beside them that may run twice (SET, reads...)."""

    __slots__ = ("_client", "_scripts")

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client)
        self._client = client
        self._scripts: set[Script] = set()

    def evalsha(self, script: Script, keys: Sequence[Any], args: Iterable[Any]) -> LeanScriptsPipeline:
        self._scripts.add(script)
        self._queue(("EVALSHA", script.sha, len(keys), *keys, *args))
        return self

    def execute(self) -> list[Any]:
        packed, convert = self._take()
        used, self._scripts = self._scripts, set()
        if not packed:
            return []
        replies = self._exchange(packed)
        if any(isinstance(reply, NoScriptError) for reply in replies):
            for script in used:
                script.sha = self._client.script_load(script.script)
            replies = self._exchange(packed)
        return self._replies(replies, convert)


def pipeline(client: redis.Redis) -> ScriptPipeline:
    """A pipeline for queuing this module's scripts with `call` (plain Redis: LeanScriptsPipeline; any
    other client, e.g. a cluster, its own pipeline)."""
    if type(client) is redis.Redis:
        return LeanScriptsPipeline(client)
    pipe: ScriptPipeline = client.pipeline(transaction=False)
    return pipe


def call(script: Script, keys: Sequence[Any], args: Iterable[Any], client: Any = None) -> Any:
    """Run `script` on `client` (default: the one it was registered on), or queue it when `client` is a
    pipeline from `pipeline()` (its reply then comes from the pipeline's execute)."""
    if isinstance(client, LeanScriptsPipeline):
        return client.evalsha(script, keys, args)
    return script(keys=keys, args=args, client=client)

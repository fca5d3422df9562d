"""The project's Lua scripts, one `.lua` file each beside this module, registered once per client.

redis-py's Script runs EVALSHA and loads the script on NOSCRIPT (on a pipeline: SCRIPT EXISTS, then
LOAD what is missing, before the pipeline runs), so the text crosses the wire only when Redis lacks it.
`pipeline()` skips that SCRIPT EXISTS round trip (two per transfer batch): it runs EVALSHA
straight away and, only when Redis answers NOSCRIPT (it restarted or flushed its scripts), loads
them and runs the pipeline again.

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
from typing import Any

import redis
from redis.client import Pipeline
from redis.cluster import ClusterPipeline, RedisCluster
from redis.commands.core import Script
from redis.exceptions import NoScriptError

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


class ScriptsFirstPipeline(Pipeline):
    """A non-transactional pipeline that assumes its scripts are loaded. On NOSCRIPT none of its
    EVALSHAs ran; the scripts are loaded and the whole pipeline runs again, so only queue commands
    beside them that may run twice (SET, EXPIRE, reads...)."""

    def load_scripts(self) -> None:
        return None  # no SCRIPT EXISTS before every execute: NOSCRIPT is handled in execute()

    def execute(self, raise_on_error: bool = True) -> list[object]:
        stack, used = list(self.command_stack), set(self.scripts)
        try:
            return list(super().execute(raise_on_error))
        except NoScriptError:
            for script in used:
                script.sha = script.registered_client.script_load(script.script)
            self.command_stack, self.scripts = stack, used
            return list(super().execute(raise_on_error))


def pipeline(client: redis.Redis) -> Pipeline:
    """A pipeline for queuing this module's scripts (plain Redis: ScriptsFirstPipeline; any other
    client, e.g. a cluster, its own pipeline)."""
    if type(client) is redis.Redis:
        return ScriptsFirstPipeline(client.connection_pool, client.response_callbacks, False, None)
    return client.pipeline(transaction=False)

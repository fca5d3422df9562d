"""The project's Lua scripts, one `.lua` file each beside this module, registered once per client.

redis-py's Script runs EVALSHA and loads the script on NOSCRIPT (on a pipeline: SCRIPT EXISTS, then
LOAD what is missing, before the pipeline runs), so the text crosses the wire only when Redis lacks it.
`pipeline()` skips that SCRIPT EXISTS round trip (two per transfer batch): it runs EVALSHA
straight away and, only when Redis answers NOSCRIPT (it restarted or flushed its scripts), loads
them and runs the pipeline again.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path

import redis
from redis.client import Pipeline
from redis.commands.core import Script
from redis.exceptions import NoScriptError

HERE = Path(__file__).resolve().parent

_registered: weakref.WeakKeyDictionary[redis.Redis, dict[str, Script]] = weakref.WeakKeyDictionary()


@functools.cache
def source(name: str) -> str:
    """The text of `<name>.lua` (read once per process)."""
    return (HERE / f"{name}.lua").read_text(encoding="utf-8")


def load(name: str, client: redis.Redis) -> Script:
    """`<name>.lua` registered on `client`; call it with keys=, args= and, to queue it on a
    pipeline, client=pipeline."""
    scripts = _registered.setdefault(client, {})
    if name not in scripts:
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

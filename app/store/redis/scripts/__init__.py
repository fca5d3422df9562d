"""The project's Lua scripts, one `.lua` file each beside this module, registered once per client.

redis-py's Script runs EVALSHA and loads the script on NOSCRIPT (on a pipeline: SCRIPT EXISTS, then
LOAD what is missing, before the pipeline runs), so the text crosses the wire only when Redis lacks it.
"""

from __future__ import annotations

import functools
import weakref
from pathlib import Path

import redis
from redis.commands.core import Script

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

"""Pipelines for the hot path's many small commands, without redis-py's per-command machinery.

A redis-py pipeline spends about 5 us of Python per queued command (the command stack, option
handling, a response callback per reply); the gateway queues three or four per message (its
clientMsgID reservation, the receiver's options, the confirmation) and the push worker one per
recipient. `LeanPipeline` packs each command with hiredis as it is queued, writes them all in one
send and reads the replies in order (about 1.5 us per command, README "Session 16"), with the
replies redis-py would have given for these commands. Connection errors are retried as redis-py's
pipeline retries them (the connection's Retry: the whole pipeline again, so queue only commands
that may run twice); an error reply is raised after every reply was read, like redis-py's.

Only for a single Redis server: on a Redis Cluster the keys of one pipeline lie on several nodes,
and `pipeline()` hands out the cluster's own pipeline, which has the same methods.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import hiredis
import redis
from redis.exceptions import ResponseError


class SmallPipeline(Protocol):
    """The commands both kinds of pipeline offer here, with redis-py's signatures and replies."""

    def set(self, name: str, value: str | int, *, ex: int | None = None, nx: bool = False) -> Any: ...
    def get(self, name: str) -> Any: ...
    def delete(self, *names: str) -> Any: ...
    def hmget(self, name: str, keys: list[str]) -> Any: ...
    def hgetall(self, name: str) -> Any: ...
    def execute(self) -> list[Any]: ...


def _as_is(reply: Any) -> Any:
    return reply


def _set_reply(reply: Any) -> bool | None:
    # redis-py: True for OK, None when NX found the key (nil)
    return None if reply is None else reply == "OK"


def _pairs_to_dict(reply: Any) -> dict[Any, Any]:
    if isinstance(reply, dict):  # RESP3
        return reply
    it = iter(reply)
    return dict(zip(it, it, strict=True))


class LeanPipeline:
    __slots__ = ("_pool", "_packed", "_convert")

    def __init__(self, client: redis.Redis) -> None:
        self._pool = client.connection_pool
        self._packed: list[bytes] = []
        self._convert: list[Callable[[Any], Any]] = []

    def _queue(self, args: tuple[Any, ...], convert: Callable[[Any], Any] = _as_is) -> LeanPipeline:
        self._packed.append(hiredis.pack_command(args))
        self._convert.append(convert)
        return self

    def set(self, name: str, value: str | int, *, ex: int | None = None, nx: bool = False) -> LeanPipeline:
        args: tuple[Any, ...] = ("SET", name, value)
        if nx:
            args += ("NX",)
        if ex is not None:
            args += ("EX", ex)
        return self._queue(args, _set_reply)

    def get(self, name: str) -> LeanPipeline:
        return self._queue(("GET", name))

    def delete(self, *names: str) -> LeanPipeline:
        return self._queue(("DEL", *names))

    def hmget(self, name: str, keys: list[str]) -> LeanPipeline:
        return self._queue(("HMGET", name, *keys))

    def hgetall(self, name: str) -> LeanPipeline:
        return self._queue(("HGETALL", name), _pairs_to_dict)

    def execute(self) -> list[Any]:
        """Every queued command's reply, in order; the queue is empty afterwards."""
        packed, convert = self._take()
        return self._replies(self._exchange(packed), convert) if packed else []

    def _take(self) -> tuple[list[bytes], list[Callable[[Any], Any]]]:
        packed, convert = self._packed, self._convert
        self._packed, self._convert = [], []
        return packed, convert

    def _exchange(self, packed: list[bytes]) -> list[Any]:
        """The raw replies, an error reply as its exception (not raised)."""
        conn = self._pool.get_connection()
        try:
            replies: list[Any] = conn.retry.call_with_retry(
                lambda: _round_trip(conn, packed), lambda _error: conn.disconnect()
            )
        except BaseException:
            conn.disconnect()  # replies may be left unread on it: never hand it out again as it is
            raise
        finally:
            self._pool.release(conn)
        return replies

    @staticmethod
    def _replies(replies: list[Any], convert: list[Callable[[Any], Any]]) -> list[Any]:
        """The replies as redis-py gives them; the first error reply raised, once all were read."""
        for number, reply in enumerate(replies, start=1):
            if isinstance(reply, ResponseError):
                reply.args = (f"command #{number} of a pipeline failed: {reply.args[0]}", *reply.args[1:])
                raise reply
        return [to(reply) for to, reply in zip(convert, replies, strict=True)]


def _round_trip(conn: Any, packed: list[bytes]) -> list[Any]:
    conn.send_packed_command([b"".join(packed)])
    replies: list[Any] = []
    for _ in packed:
        try:
            replies.append(conn.read_response())
        except ResponseError as error:  # that reply was read: the others still come
            replies.append(error)
    return replies


def pipeline(client: redis.Redis) -> SmallPipeline:
    """A LeanPipeline on a single server; the client's own (non-transactional) pipeline otherwise."""
    if type(client) is redis.Redis:
        return LeanPipeline(client)
    return client.pipeline(transaction=False)

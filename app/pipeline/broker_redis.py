"""kombu's Redis transport, with one synchronous client per channel and envelopes in compact JSON.

kombu builds a new redis.Redis for every publish, unacknowledged-message record and ack
(`Channel.conn_or_acquire`), and redis-py's constructor (its table of response callbacks) was 9% of
a transfer worker's CPU, 15% of a push worker's and 4% of the gateway's under load. The client holds
no connection of its own (each command takes one from the channel's pool), so one per pool serves
every call; a channel that rebuilt its pool (after a broker outage) gets a new one.

The transport writes each message's envelope (headers, properties and the base64 task body) as JSON
when it publishes it and again when a consumer records it as unacknowledged, and reads it back on
delivery, with kombu's `kombu.utils.json` (the standard library, with a Python hook per object): a
run's hand-offs are each a body of up to a hundred messages, and writing their envelopes was 4% of a
transfer worker's samples. The transport's module reads those two functions by name, so they are
swapped for compact_json's, which writes what orjson can and reads what it reads the same; kombu's
own functions write and read the rest (typed values such as datetimes, `__type__`), as before. Any
kombu consumer reads these envelopes: the JSON differs only in spelling (UTF-8, no spaces).
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from app.core import compact_json


def envelope_dumps(value: Any) -> bytes:
    return compact_json.dumps(value, fallback=kombu_json.dumps)


def envelope_loads(data: str | bytes) -> Any:
    return compact_json.loads(data, fallback=kombu_json.loads)


vars(kombu_redis).update(dumps=envelope_dumps, loads=envelope_loads)  # the names its methods call


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client(asynchronous=False)
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel

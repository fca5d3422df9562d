"""kombu's Redis transport, with one synchronous client per channel.

kombu builds a new redis.Redis for every publish, unacknowledged-message record and ack
(`Channel.conn_or_acquire`), and redis-py's constructor (its table of response callbacks) was 9% of
a transfer worker's CPU, 15% of a push worker's and 4% of the gateway's under load. The client holds
no connection of its own (each command takes one from the channel's pool), so one per pool serves
every call; a channel that rebuilt its pool (after a broker outage) gets a new one.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


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

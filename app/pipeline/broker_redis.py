"""kombu's Redis transport, with one synchronous client per channel, JSON bodies, and journaled
publishes in one round trip.

- kombu builds a new redis.Redis for every publish, unacknowledged-message record and ack
  (`Channel.conn_or_acquire`), and redis-py's constructor (its table of response callbacks) was 9% of
  a transfer worker's CPU, 15% of a push worker's and 4% of the gateway's under load. The client holds
  no connection of its own (each command takes one from the channel's pool), so one per pool serves
  every call; a channel that rebuilt its pool (after a broker outage) gets a new one.
- Bodies are kept as the JSON text Celery serialised (kombu's virtual transports base64-encode them by
  default): nobody encodes or decodes base64, and a journaled message's entry id can be written into
  its body by Redis. Consumers decode by the message's own `body_encoding`, so base64 messages
  published before still read.
- A message published with a `JournalEntry` in its JOURNAL_HEADER header (app/pipeline/journal.py) is
  journaled and pushed by one script (journal_publish.lua): the stream entry is added, and the
  envelope, cut where the entry's placeholder stands, is joined again with the entry's id and pushed
  onto the queue's list. Inside a producer batch the script is buffered like kombu's own LPUSH.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils.json import dumps

from app.store.redis import scripts

JOURNAL_HEADER = "x-journal-entry"  # taken out of the message before its envelope is written
JOURNAL_PUBLISH_SHA = hashlib.sha1(scripts.source("journal_publish").encode()).hexdigest()


@dataclass(frozen=True)
class JournalEntry:
    stream: str  # the journal's key
    payload: bytes  # the entry's JSON
    placeholder: str  # letters, digits and underscores, standing for the entry id in the message
    max_entries: int  # the stream's approximate cap


class Channel(kombu_redis.Channel):
    body_encoding = None  # type: ignore[assignment]
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client(asynchronous=False)
        return client

    def encode_body(self, body: Any, encoding: str | None = None) -> tuple[Any, str | None]:
        """Celery's serialised JSON as text (kombu would tag bytes as an object in the envelope);
        bytes that are not UTF-8 (another serializer) stay base64."""
        if encoding is None and isinstance(body, bytes):
            try:
                return body.decode("utf-8"), None
            except UnicodeDecodeError:
                encoding = "base64"
        encoded: tuple[Any, str | None] = super().encode_body(body, encoding)
        return encoded

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        entry = message["headers"].pop(JOURNAL_HEADER, None)
        if entry is None:
            super()._put(queue, message, **kwargs)
            return
        key = self._q_for_pri(queue, self._get_message_priority(message, reverse=False))
        pieces = dumps(message).split(entry.placeholder)
        if len(pieces) < 2:
            raise ValueError(f"a journaled message to {queue} does not name its entry")
        args = (JOURNAL_PUBLISH_SHA, 2, entry.stream, key, entry.payload, entry.max_entries, *pieces)
        batch = kwargs.get("_publish_batch")
        if batch is not None:
            batch.add("evalsha", *args)
            return
        with self.conn_or_acquire() as client:
            client.evalsha(*args)


class Transport(kombu_redis.Transport):
    Channel = Channel

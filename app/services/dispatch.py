"""Messages the server sends (REST sends, notifications of the message operations) enter the
pipeline exactly as a websocket SendMsg does: through the node's batcher, its acceptance
records (one answer per clientMsgID, P2) and the transfer queues, answered only once published (P1).

The gateway registers its batcher at start (app/api/app.py); a process without one (a CLI, a unit
test) publishes every shard's batch at once through the same acceptance code.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import gevent

from app.config import settings
from app.core.conversation import conversation_id_for, shard_of
from app.core.errors import SERVER_INTERNAL, ImError
from app.ws.acceptance import Ack, Pending
from app.ws.batcher import ShardBatcher
from app.ws.publish import accept_shard_batches

log = logging.getLogger(__name__)

_batcher: ShardBatcher[Pending] | None = None


def use_batcher(batcher: ShardBatcher[Pending] | None) -> None:
    global _batcher
    _batcher = batcher


def pending_of(doc: dict[str, Any]) -> Pending:
    conv = conversation_id_for(doc["session_type"], doc["send_id"], doc["recv_id"], doc["group_id"])
    return Pending(conv, doc["client_msg_id"], Ack(doc["server_msg_id"], doc["send_time"]), doc)


def send_docs(docs: Sequence[dict[str, Any]]) -> list[Ack | ImError]:
    """Hand messages to the pipeline; per message its answer, or the error that refused it alone.
    Submitted in order, so one conversation's messages keep it (P3)."""
    pendings = [pending_of(doc) for doc in docs]
    if _batcher is None:
        return _publish_directly(pendings)
    batcher = _batcher
    waits = [batcher.submit(shard_of(p.conversation_id, settings.transfer_shards), p) for p in pendings]
    out: list[Ack | ImError] = []
    for pending, waiting in zip(pendings, waits, strict=True):
        try:
            out.append(waiting.get(timeout=settings.gateway_publish_timeout_seconds))
        except ImError as exc:  # refused for itself (the receiver's receive options)
            out.append(exc)
        except (Exception, gevent.Timeout) as exc:  # gevent.Timeout is a BaseException
            log.error("server message %s not accepted: %r", pending.client_msg_id, exc)
            out.append(ImError(SERVER_INTERNAL, "the message was not accepted; send it again"))
    return out


def send_one(doc: dict[str, Any]) -> Ack:
    """One message; raises its error."""
    answer = send_docs([doc])[0]
    if isinstance(answer, ImError):
        raise answer
    return answer


def _publish_directly(pendings: list[Pending]) -> list[Ack | ImError]:
    by_shard: dict[int, list[int]] = {}
    for i, p in enumerate(pendings):
        by_shard.setdefault(shard_of(p.conversation_id, settings.transfer_shards), []).append(i)
    out: list[Ack | ImError] = [ImError(SERVER_INTERNAL, "not sent")] * len(pendings)
    try:
        accepted = accept_shard_batches({shard: [pendings[i] for i in indexes] for shard, indexes in by_shard.items()})
    except Exception as exc:
        log.error("publishing %d server messages failed: %r", len(pendings), exc)
        return out
    for shard, indexes in by_shard.items():
        for i, answer in zip(indexes, accepted[shard], strict=True):
            if isinstance(answer, ImError):
                out[i] = answer
            elif isinstance(answer, Exception):
                out[i] = ImError(SERVER_INTERNAL, "the message was not accepted")
            else:
                out[i] = answer
    return out

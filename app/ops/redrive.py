"""What an operator does with a dead letter (`python -m app dead-letters redrive ID`): send its unit
through its stage again. Above the stages it feeds (the gateway's publish path for a transfer entry,
the persist, push and offline tasks for the others), so app/pipeline/dead_letters.py stays below them."""

from __future__ import annotations

import logging
from typing import Any

from app.config import settings
from app.core.conversation import conversation_id_for, shard_of, transfer_queue
from app.pipeline import dead_letters, journal
from app.tasks.offline import offline_push
from app.tasks.persist import persist_batch
from app.tasks.push import push_batch
from app.tasks.webhooks import after as webhook_after
from app.ws.publish import publish_docs

log = logging.getLogger(__name__)


def redrive(entry_id: str) -> dead_letters.DeadLetter:
    """Send the entry's unit through its stage again, then forget the entry (a unit that fails
    again is dead-lettered again, under a new id). Raises UnknownEntry, or ValueError when the
    entry cannot be redriven."""
    entry = dead_letters.show(entry_id)
    if entry is None:
        raise dead_letters.UnknownEntry(entry_id)
    if not entry.redrivable:
        raise ValueError(f"{entry.id} kept only part of its payload: it cannot be redriven")
    payload = entry.payload if isinstance(entry.payload, dict) else {}
    if "msgs" in payload:
        _republish_msgs(payload["msgs"])
    elif "queue" in payload:
        _resend_task(str(payload["queue"]), payload.get("args"))
    else:
        raise ValueError(f"{entry.id} has no payload to redrive")
    dead_letters.drop(entry.id)
    log.warning("redrove dead letter %s", entry.id, extra={"conversationID": entry.conversation or None})
    return entry


def _republish_msgs(msgs: Any) -> None:
    """Back to each message's shard queue through the gateway's publish path (journaled on a Redis
    broker). Transfer dedupes by clientMsgID, so a message that did get a seq keeps it (P2)."""
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("a transfer dead letter needs a list of messages")
    by_queue: dict[str, list[Any]] = {}
    for msg in msgs:
        try:
            conv = conversation_id_for(msg["session_type"], msg["send_id"], msg["recv_id"], msg["group_id"])
        except (KeyError, TypeError, ValueError):
            conv = ""  # unroutable: any shard's transfer will dead-letter it again with its reason
        by_queue.setdefault(transfer_queue(shard_of(conv, settings.transfer_shards)), []).append(msg)
    for queue, docs in by_queue.items():
        publish_docs(queue, docs)


def _resend_task(queue: str, args: Any) -> None:
    if not isinstance(args, list):
        raise ValueError("a task dead letter needs its argument list")
    if queue == "persist":
        journal.send(persist_batch, args, "persist")
    elif queue == "push":
        journal.send(push_batch, args, "push")
    elif queue == "offline":
        offline_push.apply_async(args=args, queue="offline")
    elif queue == "webhooks":
        webhook_after.apply_async(args=args, queue="webhooks")
    else:
        raise ValueError(f"cannot redrive to queue {queue!r}")

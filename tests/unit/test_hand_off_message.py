"""A journaled hand-off's task message (journal.task_message_pieces): Celery's own message in kombu's
Redis envelope, cut where the journal entry's id goes, for journal_publish.lua to join with it."""

from __future__ import annotations

import json
from typing import Any

from app.celery_app import celery_app
from app.pipeline.broker_redis import envelope_loads
from app.pipeline.journal import task_message_pieces
from app.tasks.transfer import queued_batch

ENTRY = "1796208695411-3"


def joined(task: str, args: list[Any], queue: str, entry_id: str = ENTRY) -> dict[str, Any]:
    """What the script pushes on the queue: the pieces joined with the entry's id."""
    pieces = task_message_pieces(celery_app, task, args, queue)
    envelope: dict[str, Any] = envelope_loads(entry_id.encode().join(pieces))
    return envelope


def test_the_joined_message_is_celerys_task_message_naming_its_entry() -> None:
    args = [{"si_a_b": [{"seq": 1, "content": 'é "quoted" \\ 12345678901234567890123', "send_id": "a"}]}]
    envelope = joined("push.batch", args, "push")
    headers, props = envelope["headers"], envelope["properties"]
    assert envelope["content-type"] == "application/json" and envelope["content-encoding"] == "utf-8"
    assert headers["task"] == "push.batch" and headers["id"] == props["correlation_id"]
    assert headers["argsrepr"] == "[<1 arguments>]"
    assert headers["kwargsrepr"] == repr({"journal": ["push", ENTRY]})
    assert props["delivery_info"] == {"exchange": "", "routing_key": "push"}
    assert props["delivery_mode"] == 2 and props["priority"] == 0 and props["delivery_tag"]
    assert "body_encoding" not in props  # JSON text kombu reads as it is
    body = json.loads(envelope["body"])
    assert body[0] == args and body[1] == {"journal": ["push", ENTRY]}
    assert set(body[2]) >= {"callbacks", "errbacks", "chain", "chord"}


def test_a_gateway_batch_made_so_is_one_a_transfer_run_takes_in() -> None:
    msgs = [{"client_msg_id": "c1", "send_id": "a", "recv_id": "b"}]
    raw = json.dumps(joined("transfer.batch", [msgs], "transfer.0"))
    assert queued_batch(raw) == (msgs, ["transfer.0", ENTRY])


def test_the_id_goes_where_the_marker_was_whatever_the_messages_hold() -> None:
    # a message's text cannot cut it elsewhere: the marker is random per message, and what looks like
    # one (32 hex digits) or an entry id stays as it was
    lookalikes = [{"content": "0123456789abcdef0123456789abcdef", "other": "1796208695411-0"}]
    pieces = task_message_pieces(celery_app, "persist.batch", [lookalikes, []], "persist")
    assert len(pieces) == 3  # the body's kwargs and the kwargsrepr header
    envelope = joined("persist.batch", [lookalikes, []], "persist", "7-0")
    body = json.loads(envelope["body"])
    assert body[0] == [lookalikes, []] and body[1] == {"journal": ["persist", "7-0"]}
    assert joined("persist.batch", [lookalikes, []], "persist")["headers"]["id"] != envelope["headers"]["id"]

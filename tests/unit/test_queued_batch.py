"""Which waiting broker messages a transfer run may take into itself (`queued_batch`): only journaled
transfer.batch calls it can run exactly as the task would; anything else stays for kombu and the task."""

from __future__ import annotations

import base64
import json
from typing import Any

from app.tasks.transfer import queued_batch

MSGS = [{"client_msg_id": "c1", "send_id": "a", "recv_id": "b"}]
JOURNAL = ["transfer.0", "1764590000000-0"]


def envelope(
    args: list[Any] | None = None,
    kwargs: dict[str, Any] | None = None,
    *,
    task: str = "transfer.batch",
    eta: str | None = None,
    base64_body: bool = True,
    content_type: str = "application/json",
) -> str:
    """A task message as kombu's Redis transport stores it in a queue's list."""
    body = json.dumps([[MSGS] if args is None else args, {"journal": JOURNAL} if kwargs is None else kwargs, {}])
    return json.dumps(
        {
            "body": base64.b64encode(body.encode()).decode() if base64_body else body,
            "content-encoding": "utf-8",
            "content-type": content_type,
            "headers": {"task": task, "id": "t1", "eta": eta},
            "properties": {"body_encoding": "base64"} if base64_body else {},
        }
    )


def test_a_journaled_transfer_batch_is_taken() -> None:
    assert queued_batch(envelope()) == (MSGS, JOURNAL)
    assert queued_batch(envelope(base64_body=False).encode()) == (MSGS, JOURNAL)


def test_other_messages_are_left_as_they_are() -> None:
    assert queued_batch(envelope(task="push.batch")) is None
    assert queued_batch(envelope(eta="2026-12-01T00:00:00")) is None  # a retry waits for its time
    assert queued_batch(envelope(content_type="application/x-python-serialize")) is None
    assert queued_batch(envelope(args=[MSGS, "extra"])) is None
    assert queued_batch(envelope(kwargs={"journal": JOURNAL, "other": 1})) is None
    assert queued_batch(envelope(kwargs={})) is None
    assert queued_batch("not json") is None
    assert queued_batch(json.dumps({"body": "x"})) is None


def test_only_a_journal_entry_of_ours_counts_as_journaled() -> None:
    for journal in (None, ["", ""], ["transfer.0", ""], ["transfer.0", "not-an-id"], ["transfer.0"], "transfer.0"):
        assert queued_batch(envelope(kwargs={"journal": journal})) is None, journal

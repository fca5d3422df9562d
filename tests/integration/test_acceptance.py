"""The gateway's acceptance of a batch against the real Redis: reservations, resends, publish failures."""

from __future__ import annotations

from typing import Any

from app.ws.acceptance import Ack, Pending, accept_batch


def pending(conv: str, cid: str, server_msg_id: str) -> Pending:
    return Pending(conv, cid, Ack(server_msg_id, 1000), {"client_msg_id": cid, "server_msg_id": server_msg_id})


def test_resend_gets_the_first_answer_and_is_not_published_again(infra: dict[str, str], uid: str) -> None:
    published: list[list[dict[str, Any]]] = []
    conv = f"si_acc{uid}_x"
    first = accept_batch([pending(conv, "c1", "s1"), pending(conv, "c1", "s1-dup")], published.append)
    assert first == [Ack("s1", 1000), Ack("s1", 1000)]  # the in-batch copy is answered as the first
    assert [[d["client_msg_id"] for d in batch] for batch in published] == [["c1"]]
    again = accept_batch([pending(conv, "c1", "s2")], published.append)
    assert again == [Ack("s1", 1000)]
    assert len(published) == 1


def test_failed_publish_fails_every_copy_and_frees_the_clientmsgid(infra: dict[str, str], uid: str) -> None:
    conv = f"si_acc{uid}_y"
    accept_batch([pending(conv, "done", "s0")], lambda docs: None)

    def broker_down(docs: list[dict[str, Any]]) -> None:
        raise ConnectionError("broker gone")

    answers = accept_batch(
        [pending(conv, "c2", "s1"), pending(conv, "c2", "s1-dup"), pending(conv, "done", "s9")], broker_down
    )
    assert isinstance(answers[0], ConnectionError) and isinstance(answers[1], ConnectionError)
    assert answers[2] == Ack("s0", 1000)  # already accepted earlier: not part of the failed publish
    published: list[list[dict[str, Any]]] = []
    assert accept_batch([pending(conv, "c2", "s3")], published.append) == [Ack("s3", 1000)]
    assert len(published) == 1

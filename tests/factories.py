"""Message factories shared by the unit tests: one text MsgData, as a client sends it."""

from __future__ import annotations

from app.proto import sdkws_pb2 as pb


def text_msgdata(**fields: object) -> pb.MsgData:
    """alice -> bob, a text message with a clientMsgID and nothing else; `fields` override."""
    base: dict[str, object] = {
        "sendID": "alice",
        "recvID": "bob",
        "clientMsgID": "c1",
        "sessionType": 1,
        "contentType": 101,
        "content": b'{"content":"hi"}',
    }
    base.update(fields)
    return pb.MsgData(**base)  # type: ignore[arg-type]

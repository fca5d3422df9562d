"""Message factories shared by the tests: a text MsgData as a client sends it, and the stored message
(what the gateway hands to transfer) built from one."""

from __future__ import annotations

import json
import uuid
from typing import Any

from app.core.constants import MSG_FROM_USER, MSG_STATUS_SENDING
from app.core.protocol import msgdata_to_doc
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


def stored_msg(sender: str, receiver: str, i: int, now_ms: int) -> dict[str, Any]:
    """Text message number `i` from sender to receiver (clientMsgID `<sender>-<i>`), as the gateway
    publishes it to transfer: server fields filled, no seq yet."""
    msg = text_msgdata(
        sendID=sender,
        recvID=receiver,
        clientMsgID=f"{sender}-{i}",
        serverMsgID=uuid.uuid4().hex,
        senderPlatformID=7,
        msgFrom=MSG_FROM_USER,
        content=json.dumps({"content": f"message {i}"}).encode(),
        sendTime=now_ms,
        createTime=now_ms,
        status=MSG_STATUS_SENDING,
    )
    return msgdata_to_doc(msg)

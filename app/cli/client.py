"""A small OpenIM-protocol client over websocket-client, for the CLI and the tests.

It names its sdkType on every connection (json unless told: go for gob, js for base64 protobuf):
without one, the gateway speaks gob, as OpenIM's does."""

from __future__ import annotations

import base64
import itertools
import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any, Self
from urllib.parse import urlencode

import websocket
from google.protobuf import json_format

from app.core import gob, protocol
from app.core.constants import GROUP_CHAT, SINGLE_CHAT, TEXT
from app.core.conversation import single_conversation_id
from app.core.errors import ImError


class ClientError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def connect_url(base: str, user_id: str, platform_id: int, token: str, **extra: str) -> str:
    query = {
        "token": token,
        "sendID": user_id,
        "platformID": str(platform_id),
        "operationID": uuid.uuid4().hex,
        "sdkType": protocol.SDK_JSON,
        "isBackground": "false",
        **extra,
    }
    return f"{base.rstrip('/')}/?{urlencode(query)}"


def _data_of(resp: dict[str, Any]) -> dict[str, Any]:
    """A response's data; raises ClientError on a non-zero errCode."""
    if resp.get("errCode"):
        raise ClientError(int(resp["errCode"]), str(resp.get("errMsg", "")))
    result: dict[str, Any] = resp.get("data") or {}
    return result


class ImClient:
    """One connection: requests matched to responses by msgIncr, pushes collected on a queue.

    Whatever the connection's encoding (sdk_type json, js or go, gzip or not), requests are given and
    answers returned as protobuf's canonical JSON dicts, so every encoding reads the same."""

    def __init__(
        self,
        base_url: str,
        user_id: str,
        platform_id: int,
        token: str,
        timeout: float = 10.0,
        sdk_type: str = protocol.SDK_JSON,
        gzip: bool = False,
    ) -> None:
        self.sdk_type = sdk_type
        self.gzip = gzip
        self.user_id = user_id
        self.platform_id = platform_id
        self.token = token
        self.timeout = timeout
        self.pushes: queue.Queue[dict[str, Any]] = queue.Queue()
        # other frames the server sends unasked: 2002 kicked, 2005 online status changes
        self.notices: queue.Queue[dict[str, Any]] = queue.Queue()
        self._pending: dict[str, queue.Queue[dict[str, Any]]] = {}
        self._incr = itertools.count(1)
        self._lock = threading.Lock()
        extra = {"sdkType": sdk_type, **({"compression": "gzip"} if gzip else {})}
        self.ws = websocket.create_connection(
            connect_url(base_url, user_id, platform_id, token, **extra), timeout=timeout
        )
        self.closed = threading.Event()
        self._reader = threading.Thread(target=self._read_forever, daemon=True)
        self._reader.start()

    def _read_forever(self) -> None:
        try:
            while True:
                opcode, data = self.ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_CLOSE:
                    break
                if opcode not in (websocket.ABNF.OPCODE_TEXT, websocket.ABNF.OPCODE_BINARY):
                    continue
                if opcode == websocket.ABNF.OPCODE_BINARY and self.gzip:
                    data = protocol.gunzip_frame(data, max_bytes=1 << 30)  # the server's answers: trusted
                if opcode == websocket.ABNF.OPCODE_BINARY and self.sdk_type == protocol.SDK_GO:
                    body = _gob_body(gob.decode_response(data))
                else:  # text (the connection answer, pongs), or a JSON envelope
                    body = json.loads(data)
                body["data"] = self._decode(body.get("reqIdentifier"), body.get("data"))
                if body.get("reqIdentifier") == protocol.PUSH_MSG:
                    self.pushes.put(body)
                    continue
                waiter = self._pending.pop(str(body.get("msgIncr", "")), None)
                if waiter is not None:
                    waiter.put(body)
                elif not body.get("msgIncr"):
                    self.notices.put(body)
        except (websocket.WebSocketException, OSError, ValueError, ImError):  # GobError is a ValueError
            pass
        finally:
            self.closed.set()

    def _encode(self, req_identifier: int, data: dict[str, Any] | None) -> Any:
        if data is None or self.sdk_type == protocol.SDK_JSON or req_identifier not in protocol.REQUEST_TYPES:
            return data
        message = json_format.ParseDict(data, protocol.REQUEST_TYPES[req_identifier]())
        return protocol.encode_data(self.sdk_type, message)

    def _decode(self, req_identifier: Any, data: Any) -> Any:
        if not data or self.sdk_type == protocol.SDK_JSON or req_identifier not in protocol.RESPONSE_TYPES:
            return data
        message = protocol.decode_data(self.sdk_type, data, protocol.RESPONSE_TYPES[req_identifier])
        return protocol.encode_data(protocol.SDK_JSON, message)

    def request(self, req_identifier: int, data: dict[str, Any] | None) -> dict[str, Any]:
        """Send one request and wait for its response; raises ClientError on a non-zero errCode."""
        return _data_of(self.request_raw(req_identifier, data))

    def request_raw(
        self, req_identifier: int, data: dict[str, Any] | None, send_id: str | None = None
    ) -> dict[str, Any]:
        return self.request_later(req_identifier, data, send_id)()

    def request_later(
        self, req_identifier: int, data: dict[str, Any] | None, send_id: str | None = None
    ) -> Callable[[], dict[str, Any]]:
        """Send one request now; the returned call waits for its response (requests in flight
        together are sent in the order of these calls)."""
        incr = f"{self.user_id}_{next(self._incr)}"
        waiter: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        self._pending[incr] = waiter
        envelope = {
            "reqIdentifier": req_identifier,
            "token": self.token,
            "sendID": self.user_id if send_id is None else send_id,
            "operationID": uuid.uuid4().hex,
            "msgIncr": incr,
            "data": self._encode(req_identifier, data),
        }
        if self.sdk_type == protocol.SDK_GO:
            frame = gob.encode_request(
                gob.GeneralWsReq(
                    req_identifier=req_identifier,
                    token=envelope["token"],
                    send_id=envelope["sendID"],
                    operation_id=envelope["operationID"],
                    msg_incr=incr,
                    data=envelope["data"] or b"",
                )
            )
        else:
            frame = json.dumps(envelope).encode()
        with self._lock:
            self.ws.send_binary(protocol.gzip_frame(frame) if self.gzip else frame)

        def answer() -> dict[str, Any]:
            try:
                return waiter.get(timeout=self.timeout)
            except queue.Empty as exc:
                self._pending.pop(incr, None)
                raise TimeoutError(f"no answer to {req_identifier} within {self.timeout}s") from exc

        return answer

    def send_text(self, recv_id: str, text: str, client_msg_id: str | None = None) -> dict[str, Any]:
        return self.send(recv_id, TEXT, json.dumps({"content": text}), client_msg_id=client_msg_id)

    def send_group_text(self, group_id: str, text: str, client_msg_id: str | None = None) -> dict[str, Any]:
        return self.send("", TEXT, json.dumps({"content": text}), client_msg_id=client_msg_id, group_id=group_id)

    def newest_seqs(self) -> dict[str, int]:
        data = self.request(protocol.GET_NEWEST_SEQ, {"userID": self.user_id})
        return {k: int(v) for k, v in (data.get("maxSeqs") or {}).items()}

    def pull_range(self, conversation_id: str, begin: int, end: int, num: int = 100) -> dict[str, Any]:
        data = self.request(
            protocol.PULL_MSG_BY_RANGE,
            {
                "userID": self.user_id,
                "seqRanges": [{"conversationID": conversation_id, "begin": begin, "end": end, "num": num}],
            },
        )
        pulled: dict[str, Any] = (data.get("msgs") or {}).get(conversation_id, {})
        return pulled

    def pull_seqs(self, conversation_id: str, seqs: list[int]) -> dict[str, Any]:
        data = self.request(
            protocol.PULL_MSG_BY_SEQ_LIST,
            {"userID": self.user_id, "conversations": [{"conversationID": conversation_id, "seqs": seqs}]},
        )
        pulled: dict[str, Any] = (data.get("msgs") or {}).get(conversation_id, {})
        return pulled

    def read_state(self, conversation_ids: list[str] | None = None) -> dict[str, dict[str, int]]:
        """conversation -> {maxSeq, hasReadSeq, maxSeqTime} (1006)."""
        data = self.request(
            protocol.GET_CONV_MAX_READ_SEQ, {"userID": self.user_id, "conversationIDs": conversation_ids or []}
        )
        return {c: {k: int(v) for k, v in s.items()} for c, s in (data.get("seqs") or {}).items()}

    def last_messages(self, conversation_ids: list[str]) -> dict[str, dict[str, Any]]:
        data = self.request(
            protocol.PULL_CONV_LAST_MESSAGE, {"userID": self.user_id, "conversationIDs": conversation_ids}
        )
        msgs: dict[str, dict[str, Any]] = data.get("msgs") or {}
        return msgs

    def send_later(
        self,
        recv_id: str,
        content_type: int,
        content: str,
        options: dict[str, bool] | None = None,
        client_msg_id: str | None = None,
        group_id: str = "",
    ) -> Callable[[], dict[str, Any]]:
        """`send` without waiting for the answer: the returned call waits for it (and raises
        ClientError on a refusal), so several messages can be in flight on one connection."""
        msg: dict[str, Any] = {
            "sendID": self.user_id,
            "recvID": recv_id,
            "groupID": group_id,
            "clientMsgID": client_msg_id or uuid.uuid4().hex,
            "sessionType": GROUP_CHAT if group_id else SINGLE_CHAT,
            "contentType": content_type,
            "content": _b64(content),
            "createTime": str(int(time.time() * 1000)),
            "options": options or {},
        }
        answer = self.request_later(protocol.SEND_MSG, msg)
        return lambda: _data_of(answer())

    def send(self, recv_id: str, content_type: int, content: str, **fields: Any) -> dict[str, Any]:
        """Any message: to recv_id (single chat) or to group_id (group chat, recv_id empty); content is
        the message's text (JSON for most content types); `fields` as `send_later` takes them."""
        return self.send_later(recv_id, content_type, content, **fields)()

    def logout(self) -> dict[str, Any]:
        return self.request(protocol.LOGOUT_MSG, None)

    def set_background(self, background: bool) -> dict[str, Any]:
        return self.request(protocol.SET_BACKGROUND_STATUS, {"userID": self.user_id, "isBackground": background})

    def subscribe_online(self, subscribe: list[str], unsubscribe: list[str] | None = None) -> dict[str, list[int]]:
        """2005: watch users; returns their online platforms now (changes arrive as notices)."""
        data = self.request(
            protocol.SUB_USER_ONLINE_STATUS, {"subscribeUserID": subscribe, "unsubscribeUserID": unsubscribe or []}
        )
        return {e["userID"]: list(e.get("onlinePlatformIDs", [])) for e in data.get("subscribers", [])}

    def next_notice(self, req_identifier: int, timeout: float | None = None) -> dict[str, Any]:
        """The next unasked frame with this reqIdentifier (others are dropped); queue.Empty on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            notice = self.notices.get(timeout=max(0.0, deadline - time.monotonic()))
            if notice.get("reqIdentifier") == req_identifier:
                return notice

    def next_push(self, timeout: float | None = None) -> dict[str, Any]:
        return self.pushes.get(timeout=self.timeout if timeout is None else timeout)

    def pushed_msgs(self, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Collect at least `count` pushed messages (MsgData dicts) within `timeout` seconds."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                push = self.pushes.get(timeout=remaining)
            except queue.Empty:
                break
            data = push.get("data") or {}
            for pulled in [*data.get("msgs", {}).values(), *data.get("notificationMsgs", {}).values()]:
                got.extend(pulled.get("Msgs", []))
        return got

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        # The reader thread owns receiving, so it is the one that sees the server's close reply.
        try:
            self.ws.send_close()
        except (websocket.WebSocketException, OSError):
            pass
        self.closed.wait(timeout=3)
        self.ws.shutdown()


def _gob_body(resp: gob.GeneralWsResp) -> dict[str, Any]:
    """A gob GeneralWsResp as the JSON envelope's dict (data still raw protobuf: _decode reads it)."""
    return {
        "reqIdentifier": resp.req_identifier,
        "errCode": resp.err_code,
        "errMsg": resp.err_msg,
        "msgIncr": resp.msg_incr,
        "operationID": resp.operation_id,
        "data": resp.data,
    }


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def text_of(msg: dict[str, Any]) -> str:
    """The text of a pushed or pulled MsgData dict (content is base64 in the JSON mapping)."""
    raw = base64.b64decode(msg.get("content", "") or "")
    try:
        body = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    return str(body.get("content", "")) if isinstance(body, dict) else raw.decode(errors="replace")


__all__ = ["ImClient", "ClientError", "connect_url", "text_of", "single_conversation_id"]

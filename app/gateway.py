"""Websocket gateway (OpenIM's msggateway): sessions, requests, and pushes to open sockets.

Runs under gevent (`python -m app gateway` patches the standard library first). A client connects
with OpenIM's query parameters, sends request envelopes, and receives 2001 pushes that the push
stage routed to this node over Redis.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import gevent
from flask import Flask, Response, jsonify, request
from flask_sock import Sock
from gevent.queue import Full, Queue
from google.protobuf.message import Message
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app import cache, classify, history, metrics, protocol, storage
from app.acceptance import Ack, Pending, accept_batch
from app.admin_api import admin_api
from app.auth import parse_token
from app.batcher import ShardBatcher
from app.celery_app import celery_app
from app.config import settings
from app.conversation import SINGLE_CHAT, conversation_id_for, shard_of, transfer_queue
from app.errors import ARGS_ERROR, CONN_ARGS_ERROR, NO_PERMISSION, SERVER_INTERNAL, TOKEN_INVALID, ImError
from app.proto import sdkws_pb2 as pb

log = logging.getLogger(__name__)

PUBLISH_TIMEOUT_SECONDS = 15
READ_DEADLINE_SECONDS = 120
ONLINE_RENEW_SECONDS = 30
WS_POLICY_VIOLATION = 1008
OUTBOX_LIMIT = 1000  # frames queued for one socket before it counts as too slow


# --- connection parameters -------------------------------------------------------------------


@dataclass(frozen=True)
class ConnArgs:
    token: str
    send_id: str
    platform_id: int
    operation_id: str
    sdk_type: str
    compression: str
    is_background: bool
    is_msg_resp: bool


def parse_conn_args(args: dict[str, str], header_compression: str = "") -> ConnArgs:
    """OpenIM's query parameters, or its `?v=` form (base64url JSON); malformed is CONN_ARGS_ERROR."""
    if args.get("v"):
        return _conn_args_from_v(args["v"], header_compression)
    send_id = args.get("sendID", "")
    if not send_id:
        raise ImError(CONN_ARGS_ERROR, "sendID is required")
    try:
        platform_id = int(args.get("platformID", ""))
    except ValueError as exc:
        raise ImError(CONN_ARGS_ERROR, "platformID must be an integer") from exc
    return _checked_conn_args(
        ConnArgs(
            token=args.get("token", ""),
            send_id=send_id,
            platform_id=platform_id,
            operation_id=args.get("operationID", ""),
            sdk_type=args.get("sdkType", ""),
            compression=args.get("compression", "") or header_compression,
            is_background=args.get("isBackground", "") == "true",
            is_msg_resp=args.get("isMsgResp", "") == "true",
        )
    )


def _conn_args_from_v(encoded: str, header_compression: str) -> ConnArgs:
    try:
        info = json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))
    except (ValueError, binascii.Error) as exc:
        raise ImError(CONN_ARGS_ERROR, "v must be base64url JSON") from exc
    if not isinstance(info, dict):
        raise ImError(CONN_ARGS_ERROR, "v must hold a JSON object")
    platform_id = info.get("platformID")
    if not isinstance(platform_id, int) or isinstance(platform_id, bool):
        raise ImError(CONN_ARGS_ERROR, "platformID must be an integer")
    texts = {k: info.get(k, "") for k in ("token", "userID", "operationID", "sdkType", "compression")}
    if any(not isinstance(v, str) for v in texts.values()):
        raise ImError(CONN_ARGS_ERROR, "token, userID, operationID, sdkType and compression must be strings")
    if not texts["userID"]:
        raise ImError(CONN_ARGS_ERROR, "userID is required")
    return _checked_conn_args(
        ConnArgs(
            token=texts["token"],
            send_id=texts["userID"],
            platform_id=platform_id,
            operation_id=texts["operationID"],
            sdk_type=texts["sdkType"],
            compression=texts["compression"] or header_compression,
            is_background=info.get("background") is True,
            is_msg_resp=info.get("sendResponse") is True,
        )
    )


def _checked_conn_args(args: ConnArgs) -> ConnArgs:
    if not 1 <= args.platform_id <= 10:
        raise ImError(CONN_ARGS_ERROR, "platformID must be one of OpenIM's platforms (1-10)")
    sdk_type = protocol.SDK_ALIASES.get(args.sdk_type, args.sdk_type)
    if sdk_type not in protocol.SDK_TYPES:
        raise ImError(CONN_ARGS_ERROR, f"sdkType must be one of {', '.join(protocol.SDK_ALIASES)}")
    if args.compression not in ("", "gzip"):
        raise ImError(CONN_ARGS_ERROR, "compression must be gzip or empty")
    return replace(args, sdk_type=sdk_type)


def authenticate(args: ConnArgs) -> None:
    claims = parse_token(args.token)
    if claims.user_id != args.send_id or claims.platform_id != args.platform_id:
        raise ImError(TOKEN_INVALID, "token does not belong to this sendID/platformID")


# --- one client connection -------------------------------------------------------------------


class Conn:
    """One client socket. Every write goes through its outbox and one writer greenlet, so responses
    and pushes reach the client in the order they were produced and a slow client never blocks the
    greenlet that produced them."""

    def __init__(self, ws: Any, args: ConnArgs) -> None:
        self.ws = ws
        self.user_id = args.send_id
        self.platform_id = args.platform_id
        self.sdk_type = args.sdk_type
        self.gzip = args.compression == "gzip"
        self.conn_id = uuid.uuid4().hex
        self._outbox: Queue[bytes | str | None] = Queue(maxsize=OUTBOX_LIMIT)
        self._writer = gevent.spawn(self._write_forever)

    def send_frame(self, frame: bytes) -> None:
        self._enqueue(protocol.gzip_frame(frame) if self.gzip else frame)

    def send_text(self, text: str) -> None:
        self._enqueue(text)

    def _enqueue(self, item: bytes | str) -> None:
        try:
            self._outbox.put_nowait(item)
        except Full:
            # The client reads slower than we write: drop it; it reconnects and pulls what it missed.
            log.warning("closing %s/%d: %d frames unsent", self.user_id, self.platform_id, OUTBOX_LIMIT)
            self.close()

    def _write_forever(self) -> None:
        while True:
            item = self._outbox.get()
            if item is None:
                return
            try:
                self.ws.send(item)
            except Exception:
                log.info("write to %s/%d failed: connection gone", self.user_id, self.platform_id)
                return

    def finish(self, timeout: float = 5.0) -> None:
        """The session ended: write what is still queued, then stop the writer."""
        try:
            self._outbox.put_nowait(None)
        except Full:
            self._writer.kill(block=False)
        self._writer.join(timeout=timeout)

    def close(self) -> None:
        """Stop the writer (after what is queued) and close the socket."""
        try:
            self._outbox.put_nowait(None)
        except Full:
            self._writer.kill(block=False)
        try:
            self.ws.close()
        except Exception:
            pass

    def respond(
        self, req_id: int, msg_incr: str, operation_id: str, data: Message | None = None, err: ImError | None = None
    ) -> None:
        encoded = protocol.encode_data(self.sdk_type, data) if data is not None else None
        self.send_frame(
            protocol.encode_response(
                req_id,
                msg_incr,
                operation_id,
                encoded,
                err_code=err.code if err else 0,
                err_msg=err.message if err else "",
            )
        )


class Hub:
    """This node's open connections, by user."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._by_user: dict[str, set[Conn]] = {}

    def add(self, conn: Conn) -> None:
        self._by_user.setdefault(conn.user_id, set()).add(conn)
        cache.set_online(conn.user_id, conn.platform_id, self.node_id)

    def remove(self, conn: Conn) -> None:
        conns = self._by_user.get(conn.user_id, set())
        conns.discard(conn)
        if not conns:
            self._by_user.pop(conn.user_id, None)
        if not any(c.platform_id == conn.platform_id for c in conns):
            try:
                cache.clear_online(conn.user_id, conn.platform_id, self.node_id)
            except Exception:  # Redis down: the entry expires by itself
                log.warning("could not clear online state of %s", conn.user_id, exc_info=True)

    def conns_of(self, user_id: str) -> list[Conn]:
        return list(self._by_user.get(user_id, ()))

    def connection_count(self) -> int:
        return sum(len(c) for c in self._by_user.values())

    def renew_online(self) -> None:
        for user_id, conns in list(self._by_user.items()):
            for platform in {c.platform_id for c in conns}:
                cache.set_online(user_id, platform, self.node_id)

    def deliver(self, payload: dict[str, Any]) -> int:
        """Write one push (routed to this node by the push stage) to the recipients' sockets."""
        sent = 0
        for delivery in payload.get("deliveries", []):
            conv = delivery["conversation_id"]
            push = pb.PushMessages()
            push.msgs[conv].Msgs.extend(protocol.doc_to_msgdata(m) for m in delivery["msgs"])
            frames: dict[str, bytes] = {}
            for user_id, skip_platform in delivery["users"]:
                for conn in self.conns_of(user_id):
                    if conn.platform_id == skip_platform:
                        continue
                    frame = frames.get(conn.sdk_type)
                    if frame is None:
                        frame = frames[conn.sdk_type] = protocol.encode_response(
                            protocol.PUSH_MSG, "", "", protocol.encode_data(conn.sdk_type, push)
                        )
                    conn.send_frame(frame)
                    sent += 1
        return sent


# --- requests --------------------------------------------------------------------------------


def new_server_msg_id(send_id: str, now_ms: int) -> str:
    return hashlib.md5(f"{now_ms}-{send_id}-{uuid.uuid4().hex}".encode()).hexdigest()


def prepare_outgoing(conn: Conn, msg: pb.MsgData, max_content: int, now_ms: int) -> tuple[str, dict[str, Any]]:
    """Check a SendMsg against the connection and fill the server's fields; returns (conversation, doc)."""
    if msg.sendID and msg.sendID != conn.user_id:
        raise ImError(NO_PERMISSION, "sendID is not the connection's user")
    if msg.sessionType != SINGLE_CHAT:
        raise ImError(ARGS_ERROR, f"sessionType {msg.sessionType} is not supported")
    if not msg.recvID:
        raise ImError(ARGS_ERROR, "recvID is required for a single chat")
    if not msg.clientMsgID or len(msg.clientMsgID) > 64:
        raise ImError(ARGS_ERROR, "clientMsgID is required (at most 64 characters)")
    if msg.contentType <= 0:
        raise ImError(ARGS_ERROR, "contentType is required")
    if len(msg.content) > max_content:
        raise ImError(ARGS_ERROR, f"content is larger than {max_content} bytes")
    if msg.contentType == classify.READ_RECEIPT:
        try:
            classify.read_receipt_seq(msg.content.decode("utf-8", errors="replace"))
        except ValueError as exc:
            raise ImError(ARGS_ERROR, str(exc)) from exc
    msg.sendID = conn.user_id
    msg.senderPlatformID = conn.platform_id
    msg.serverMsgID = new_server_msg_id(conn.user_id, now_ms)
    msg.sendTime = now_ms
    if msg.createTime <= 0:
        msg.createTime = now_ms
    if msg.msgFrom == 0:
        msg.msgFrom = protocol.MSG_FROM_USER
    msg.status = protocol.MSG_STATUS_SENDING
    msg.seq = 0
    conv = conversation_id_for(msg.sessionType, msg.sendID, msg.recvID, msg.groupID)
    return conv, protocol.msgdata_to_doc(msg)


READ_REQUESTS: dict[int, tuple[type[Message], Callable[[str, Any], Message]]] = {
    protocol.GET_NEWEST_SEQ: (pb.GetMaxSeqReq, lambda user_id, _body: history.newest_seqs(user_id)),
    protocol.PULL_MSG_BY_RANGE: (pb.PullMessageBySeqsReq, history.pull_by_range),
    protocol.PULL_MSG_BY_SEQ_LIST: (pb.GetSeqMessageReq, history.pull_by_seq_list),
    protocol.GET_CONV_MAX_READ_SEQ: (pb.GetConversationsHasReadAndMaxSeqReq, history.has_read_and_max),
    protocol.PULL_CONV_LAST_MESSAGE: (pb.GetLastMessageReq, history.last_messages),
}


class Gateway:
    def __init__(self, node_id: str, batcher: ShardBatcher[Pending]) -> None:
        self.hub = Hub(node_id)
        self.batcher = batcher
        self.handlers: dict[int, Callable[[Conn, protocol.Request], Message | None]] = {
            protocol.SEND_MSG: self.send_msg,
            **{req_id: self.read for req_id in READ_REQUESTS},
        }

    def handle_frame(self, conn: Conn, frame: bytes | str) -> None:
        if isinstance(frame, str):
            if _is_ping(frame):
                conn.send_text(json.dumps({"type": "pong"}))
                return
            frame = frame.encode("utf-8")
        req: protocol.Request | None = None
        try:
            if conn.gzip:
                frame = protocol.gunzip_frame(frame)
            req = protocol.parse_request(frame)
            if req.send_id != conn.user_id:
                raise ImError(NO_PERMISSION, "sendID is not the connection's user")
            handler = self.handlers.get(req.req_identifier)
            if handler is None:
                raise ImError(ARGS_ERROR, f"unknown reqIdentifier {req.req_identifier}")
            data = handler(conn, req)
            conn.respond(req.req_identifier, req.msg_incr, req.operation_id, data)
        except ImError as err:
            log.info("request from %s refused (%d): %s", conn.user_id, err.code, err.message)
            self._respond_error(conn, req, frame, err)
        except Exception:
            log.exception("request from %s failed", conn.user_id)
            self._respond_error(conn, req, frame, ImError(SERVER_INTERNAL, "internal server error"))

    @staticmethod
    def _respond_error(conn: Conn, req: protocol.Request | None, frame: bytes, err: ImError) -> None:
        if req is not None:
            conn.respond(req.req_identifier, req.msg_incr, req.operation_id, err=err)
            return
        known = protocol.best_effort_envelope(frame)
        conn.respond(
            known.get("reqIdentifier", protocol.DATA_ERROR),
            known.get("msgIncr", ""),
            known.get("operationID", ""),
            err=err,
        )

    def send_msg(self, conn: Conn, req: protocol.Request) -> Message:
        msg = protocol.decode_data(conn.sdk_type, req.data, pb.MsgData)
        conv, doc = prepare_outgoing(conn, msg, settings.max_content_bytes, int(time.time() * 1000))
        pending = Pending(conv, msg.clientMsgID, Ack(msg.serverMsgID, msg.sendTime), doc)
        answered = self.batcher.submit(shard_of(conv, settings.transfer_shards), pending)
        try:
            ack: Ack = answered.get(timeout=PUBLISH_TIMEOUT_SECONDS)
        except Exception as exc:
            raise ImError(SERVER_INTERNAL, "message was not accepted, send it again") from exc
        metrics.MSGS_ACCEPTED.inc()
        return pb.UserSendMsgResp(serverMsgID=ack.server_msg_id, clientMsgID=msg.clientMsgID, sendTime=ack.send_time)

    def read(self, conn: Conn, req: protocol.Request) -> Message:
        """The read requests (1001, 1002, 1005, 1006, 1007): always about the connection's own user."""
        request_cls, answer = READ_REQUESTS[req.req_identifier]
        body = protocol.decode_data(conn.sdk_type, req.data, request_cls)
        user_id = getattr(body, "userID", "")
        if user_id and user_id != conn.user_id:
            raise ImError(NO_PERMISSION, "userID is not the connection's user")
        return answer(conn.user_id, body)

    # --- background greenlets ---

    def subscribe_pushes(self) -> None:
        """Consume this node's push channel forever, reconnecting through Redis outages."""
        while True:
            try:
                pubsub = cache.get_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(cache.push_channel(self.hub.node_id))
                for message in pubsub.listen():
                    if message.get("type") == "message":
                        # inline, in arrival order: delivery only queues frames on the sockets' outboxes
                        self._deliver_raw(message["data"])
            except Exception:
                log.warning("push subscription lost; resubscribing", exc_info=True)
                gevent.sleep(1)

    def _deliver_raw(self, raw: str) -> None:
        try:
            self.hub.deliver(json.loads(raw))
        except Exception:
            log.exception("bad push payload")

    def renew_online_forever(self) -> None:
        while True:
            gevent.sleep(ONLINE_RENEW_SECONDS)
            try:
                self.hub.renew_online()
            except Exception:
                log.warning("renewing online state failed", exc_info=True)


def _is_ping(text: str) -> bool:
    try:
        body = json.loads(text)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("type") == "ping"


def accept_shard_batch(shard: int, batch: list[Pending]) -> list[Ack | Exception]:
    queue = transfer_queue(shard)

    def publish(docs: list[dict[str, Any]]) -> None:
        journal = [queue, cache.journal_append(queue, docs)] if JOURNAL_BATCHES else None
        try:
            celery_app.send_task("transfer.batch", args=[docs], kwargs={"journal": journal}, queue=queue)
        except Exception:
            if journal:
                cache.journal_remove(*journal)  # the client is told to resend: do not replay this one
            raise

    return accept_batch(batch, publish)


# Only the Redis transport can lose a delivered message (see app/cache.py, transfer journal).
JOURNAL_BATCHES = not settings.effective_broker_url.startswith(("amqp://", "pyamqp://", "amqps://"))


# --- Flask app -------------------------------------------------------------------------------


def create_app(gateway: Gateway) -> Flask:
    app = Flask(__name__)
    app.config["SOCK_SERVER_OPTIONS"] = {"max_message_size": protocol.MAX_FRAME_BYTES}
    sock = Sock(app)
    app.register_blueprint(admin_api)

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify({"status": "ok", "node": gateway.hub.node_id, "connections": gateway.hub.connection_count()})

    @app.get("/metrics")
    def prometheus_metrics() -> Any:
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    @sock.route("/")
    def websocket(ws: Any) -> None:
        try:
            args = parse_conn_args(request.args.to_dict(), request.headers.get("compression", ""))
            authenticate(args)
        except ImError as err:
            log.info("connection refused (%d): %s", err.code, err.message)
            ws.send(json.dumps({"errCode": err.code, "errMsg": err.message, "errDlt": ""}))
            ws.close(reason=WS_POLICY_VIOLATION, message=err.message[:120])
            return
        conn = Conn(ws, args)
        gateway.hub.add(conn)
        log.info("user %s connected on platform %d", conn.user_id, conn.platform_id)
        try:
            if args.is_msg_resp:
                conn.send_text(json.dumps({"errCode": 0, "errMsg": "", "errDlt": ""}))
            while True:
                frame = ws.receive(timeout=READ_DEADLINE_SECONDS)
                if frame is None:
                    break  # idle past the read deadline
                gateway.handle_frame(conn, frame)
        finally:
            gateway.hub.remove(conn)
            conn.finish()
            log.info("user %s disconnected from platform %d", conn.user_id, conn.platform_id)

    return app


def serve() -> None:
    """Run the gateway until killed (the caller has already monkey-patched with gevent)."""
    from gevent.pywsgi import WSGIServer

    storage.ensure_indexes()
    batcher: ShardBatcher[Pending] = ShardBatcher(
        accept_shard_batch, settings.batch_linger_ms / 1000.0, settings.batch_max_msgs
    )
    gateway = Gateway(settings.node_id, batcher)
    gevent.spawn(gateway.subscribe_pushes)
    gevent.spawn(gateway.renew_online_forever)
    server = WSGIServer((settings.gateway_host, settings.gateway_port), create_app(gateway), log=None)
    log.info(
        "gateway %s listening on ws://%s:%d/ (pid %d)",
        settings.node_id,
        settings.gateway_host,
        settings.gateway_port,
        os.getpid(),
    )
    server.serve_forever()

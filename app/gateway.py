"""Websocket gateway (OpenIM's msggateway): sessions, requests, and pushes to open sockets.

Runs under gevent (`python -m app gateway` patches the standard library first). A client connects
with OpenIM's query parameters, sends request envelopes, and receives 2001 pushes that the push
stage routed to this node over Redis.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl

import gevent
from google.protobuf.message import Message
from simple_websocket import ConnectionClosed

from app.api import app as web_app
from app.config import settings
from app.core import compact_json, protocol, push_frames, sessions, validation
from app.core.constants import GROUP_CHAT, HAS_READ_RECEIPT, MSG_FROM_USER, MSG_STATUS_SENDING, SINGLE_CHAT
from app.core.conversation import conversation_id_for, shard_of
from app.core.errors import (
    ARGS_ERROR,
    CONN_ARGS_ERROR,
    CONN_OVER_MAX_NUM,
    NO_PERMISSION,
    NOT_IN_GROUP,
    RATE_LIMITED,
    SERVER_INTERNAL,
    TOKEN_INVALID,
    ImError,
)
from app.core.sessions import LOGIN_POLICIES, platforms_to_kick
from app.ops import metrics
from app.ops.runtime import thaw_forever, tune_gc, watch_gc
from app.pipeline.webhooks import check_webhooks
from app.proto import sdkws_pb2 as pb
from app.services import groups, history, profiles
from app.services.auth import TokenClaims, verify_token
from app.store.mongo import client as mongo
from app.store.redis import push_tokens, tokens
from app.store.redis.client import get_redis
from app.store.redis.keys import ONLINE_EVENTS_CHANNEL, push_channel
from app.store.redis.online import get_online, publish_to_node
from app.ws import send_hooks
from app.ws.acceptance import Ack, LaterSettlements, Pending
from app.ws.batcher import Handler, ShardBatcher, ShardResults
from app.ws.connections import Conn, ConnArgs, Hub, online_event
from app.ws.publish import accept_shard_batches
from app.ws.sockets import (
    GuardedServer,
    InlineServer,
    SocketGuard,
    WholeWrites,
    drop_handshake,
    end_websocket,
    release_parser,
)

log = logging.getLogger(__name__)

ONLINE_RENEW_SECONDS = 30
LIVENESS_SWEEP_SECONDS = 1.0
LIVENESS_SWEEP_SLICE = 500  # connections checked between two yields to the loop
WS_POLICY_VIOLATION = 1008
WS_GOING_AWAY = 1001
WS_INTERNAL_ERROR = 1011


# --- connection parameters -------------------------------------------------------------------


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
    try:
        validation.check_user_id(args.send_id, "sendID")
    except ImError as err:
        raise ImError(CONN_ARGS_ERROR, err.message) from err
    if not 1 <= args.platform_id <= 10:
        raise ImError(CONN_ARGS_ERROR, "platformID must be one of OpenIM's platforms (1-10)")
    sdk_type = protocol.SDK_ALIASES.get(args.sdk_type, args.sdk_type)
    if sdk_type not in protocol.SDK_TYPES:
        raise ImError(CONN_ARGS_ERROR, f"sdkType must be one of {', '.join(protocol.SDK_TYPES)} (none: go)")
    if args.compression not in ("", "gzip"):
        raise ImError(CONN_ARGS_ERROR, "compression must be gzip or empty")
    return replace(args, sdk_type=sdk_type)


def authenticate(args: ConnArgs) -> TokenClaims:
    claims = verify_token(args.token)  # the same check as every REST route: a revoked token gets 1506
    if claims.user_id != args.send_id or claims.platform_id != args.platform_id:
        raise ImError(TOKEN_INVALID, "token does not belong to this sendID/platformID")
    return claims


# --- requests --------------------------------------------------------------------------------


SERVER_MSG_IDS_PER_READ = 256
_server_msg_ids: list[str] = []
os.register_at_fork(after_in_child=_server_msg_ids.clear)  # a child never repeats its parent's


def new_server_msg_id() -> str:
    """32 random hex digits, the shape of OpenIM's md5 ids (a uuid4 hashed with md5 cost 3% of the
    gateway under load for no more randomness), from the OS's randomness read for 256 ids at once
    (one system call per id was 2.5% of the gateway at saturation, py-spy)."""
    if not _server_msg_ids:
        block = os.urandom(16 * SERVER_MSG_IDS_PER_READ).hex()
        _server_msg_ids.extend(block[i : i + 32] for i in range(0, len(block), 32))
    return _server_msg_ids.pop()


def prepare_outgoing(
    conn: Conn, msg: pb.MsgData, max_content: int, now_ms: int, sender: tuple[str, str] = ("", "")
) -> tuple[str, dict[str, Any]]:
    """Check a SendMsg against the connection and fill the server's fields; returns (conversation, doc).
    `sender` is the server's (nickname, face URL) of the connection's user: never the client's."""
    if msg.sendID and msg.sendID != conn.user_id:
        raise ImError(NO_PERMISSION, "sendID is not the connection's user")
    if msg.sessionType == SINGLE_CHAT:
        if not msg.recvID:
            raise ImError(ARGS_ERROR, "recvID is required for a single chat")
        msg.groupID = ""
    elif msg.sessionType == GROUP_CHAT:
        if not msg.groupID:
            raise ImError(ARGS_ERROR, "groupID is required for a group chat")
        msg.recvID = ""
    else:
        raise ImError(ARGS_ERROR, f"sessionType {msg.sessionType} is not supported (1 single, 3 group)")
    validation.check_msgdata(msg, max_content)
    validation.check_client_origin(msg)
    msg.sendID = conn.user_id
    conv = conversation_id_for(msg.sessionType, msg.sendID, msg.recvID, msg.groupID)
    if msg.contentType == HAS_READ_RECEIPT:
        validation.check_read_receipt(msg.content, conn.user_id, conv)
    msg.senderPlatformID = conn.platform_id
    msg.senderNickname, msg.senderFaceURL = sender
    msg.serverMsgID = new_server_msg_id()
    msg.sendTime = now_ms
    if msg.createTime <= 0:
        msg.createTime = now_ms
    msg.msgFrom = MSG_FROM_USER
    msg.status = MSG_STATUS_SENDING
    msg.seq = 0
    return conv, protocol.msgdata_to_doc(msg)


# SendMsgs of one connection waiting for their batch before it stops reading more (the request rate
# limit allows bursts of GATEWAY_RATE_BURST).
MAX_SENDS_IN_FLIGHT = 64
# A flush's confirmations of clientMsgID answers wait for the next flush's round trip at most this long.
SETTLE_AFTER_SECONDS = 0.05

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
        self.sockets = SocketGuard(
            settings.gateway_max_sockets, settings.gateway_max_pending_sockets, settings.gateway_handshake_timeout
        )
        self.draining = False
        self.push_subscribed = False
        self.handlers: dict[int, Callable[[Conn, protocol.Request], Message | None]] = {
            **{req_id: self.read for req_id in READ_REQUESTS},
            protocol.LOGOUT_MSG: self.logout,
            protocol.SET_BACKGROUND_STATUS: self.set_background,
            protocol.SUB_USER_ONLINE_STATUS: self.sub_online_status,
        }

    # --- sessions ---

    def check_admission(self) -> None:
        """Whether this node takes a new connection now (also asked before the upgrade)."""
        if self.draining:
            raise ImError(SERVER_INTERNAL, "this gateway is shutting down; connect to another node")
        if self.hub.connection_count() >= settings.gateway_max_conns:
            raise ImError(CONN_OVER_MAX_NUM, "this gateway holds its maximum number of connections")

    def login(self, conn: Conn) -> None:
        """Register a new connection after applying the multi-terminal policy on every node."""
        self.check_admission()
        self.kick_older_logins(conn.user_id, conn.platform_id, conn.conn_id, conn.token)
        self.hub.add(conn)
        self._close_at_expiry(conn)

    def _close_at_expiry(self, conn: Conn) -> None:
        """A socket does not outlive its token: closed with 1008 when it expires (no 2002, which SDKs
        read as another device's login); the client's reconnect then gets 1501 and asks for a new one."""
        if conn.token_expires_at <= 0:
            return
        # a bare loop timer (a greenlet only once it fires), stopped when the session ends (Conn.finish):
        # a greenlet waiting per connection cost a dozen GC-tracked objects each
        timer = gevent.get_hub().loop.timer(max(0.0, conn.token_expires_at - time.time()))
        timer.start(gevent.spawn, self._expire, conn)
        conn.expiry_timer = timer

    def _expire(self, conn: Conn) -> None:
        log.info("closing %s/%d: its token expired", conn.user_id, conn.platform_id)
        self.hub.remove(conn)
        conn.close(WS_POLICY_VIOLATION)

    def kick_older_logins(self, user_id: str, platform_id: int, except_conn: str, new_token: str) -> None:
        online = get_online([user_id]).get(user_id, [])
        local = {c.platform_id for c in self.hub.conns_of(user_id)}
        platforms = platforms_to_kick(settings.multi_login_policy, platform_id, local | {e.platform_id for e in online})
        if not platforms:
            return
        self.hub.kick(user_id, platforms, except_conn, new_token)
        command = {"user_id": user_id, "platforms": sorted(platforms), "except_conn": except_conn, "token": new_token}
        for node in {e.node_id for e in online if e.platform_id in platforms} - {self.hub.node_id}:
            publish_to_node(node, {"kick": command})

    def handle_frame(self, conn: Conn, frame: bytes | str) -> None:
        started = time.monotonic()
        if not conn.limiter.allow(started):
            self._refuse_flood(conn, frame)
            return
        if conn.rate_limited:
            conn.rate_limited = False
            log.info("%s/%d is under the request rate limit again", conn.user_id, conn.platform_id)
        if isinstance(frame, str):
            ping = _text_ping(frame)
            if ping is not None:
                conn.pong(ping.get("body"))
                return
            frame = frame.encode("utf-8")
        req: protocol.Request | None = None
        try:
            if conn.gzip:
                frame = protocol.gunzip_frame(frame)
            req = protocol.parse_request(frame, conn.sdk_type)
            if req.send_id != conn.user_id:
                raise ImError(NO_PERMISSION, "sendID is not the connection's user")
            if req.req_identifier == protocol.SEND_MSG:
                self.send_msg(conn, req, started)  # answered once its batch is published (_answer_send)
                return
            handler = self.handlers.get(req.req_identifier)
            if handler is None:
                raise ImError(ARGS_ERROR, f"unknown reqIdentifier {req.req_identifier}")
            data = handler(conn, req)
            conn.respond(req.req_identifier, req.msg_incr, req.operation_id, data)
        except ImError as err:
            _log_refusal(conn, req, err)
            self._respond_error(conn, req, frame, err)
        except Exception:
            log.exception(
                "request from %s failed", conn.user_id, extra={"operationID": req.operation_id if req else ""}
            )
            self._respond_error(conn, req, frame, ImError(SERVER_INTERNAL, "internal server error"))

    def _refuse_flood(self, conn: Conn, frame: bytes | str) -> None:
        if not conn.rate_limited:  # logged once per flood, not once per frame
            conn.rate_limited = True
            log.warning("%s/%d is over %.0f requests/s: refusing", conn.user_id, conn.platform_id, conn.limiter.rate)
        err = ImError(RATE_LIMITED, f"too many requests: at most {conn.limiter.rate:.0f} per second")
        raw = frame.encode("utf-8") if isinstance(frame, str) else frame
        self._respond_error(conn, None, b"" if conn.gzip else raw, err)

    @staticmethod
    def _respond_error(conn: Conn, req: protocol.Request | None, frame: bytes, err: ImError) -> None:
        if req is not None:
            conn.respond(req.req_identifier, req.msg_incr, req.operation_id, err=err)
            return
        known = protocol.best_effort_envelope(frame, conn.sdk_type)
        conn.respond(
            known.get("reqIdentifier", protocol.DATA_ERROR),
            known.get("msgIncr", ""),
            known.get("operationID", ""),
            err=err,
        )

    def send_msg(self, conn: Conn, req: protocol.Request, started: float) -> None:
        """Checked and handed to the node's batcher (for its shard); answered by `_answer_send` once the batch
        carrying it is published, while the connection goes on reading (its later messages to the
        same conversation queue behind it on the same shard, so their order holds: P3). Past
        MAX_SENDS_IN_FLIGHT unanswered ones, the connection's reading waits for this answer."""
        msg = protocol.decode_data(conn.sdk_type, req.data, pb.MsgData)
        validation.check_operation_id(req.operation_id)
        now_ms = int(time.time() * 1000)
        conv, doc = prepare_outgoing(conn, msg, settings.max_content_bytes, now_ms, profiles.sender(conn.user_id))
        doc[push_frames.OPERATION_ID] = req.operation_id  # its push carries it back (OpenIM SDKs need it)
        if msg.sessionType == GROUP_CHAT and not groups.is_member(msg.groupID, conn.user_id):
            raise ImError(NOT_IN_GROUP, f"{conn.user_id} is not in group {msg.groupID}")
        doc = send_hooks.before_send(doc, req.operation_id)  # OpenIM's before-send webhooks, when enabled
        pending = Pending(conv, msg.clientMsgID, Ack(msg.serverMsgID, msg.sendTime), doc)
        shard = shard_of(conv, settings.transfer_shards)
        answer = functools.partial(self._answer_send, conn, req, msg.clientMsgID, started)
        conn.sends_in_flight += 1
        if conn.sends_in_flight <= MAX_SENDS_IN_FLIGHT:
            self.batcher.submit_with(shard, pending, answer)
            return
        waited = self.batcher.submit(shard, pending)
        try:
            result: object = waited.get(timeout=settings.gateway_publish_timeout_seconds)
        except (Exception, gevent.Timeout) as exc:  # gevent.Timeout, the deadline, is a BaseException
            result = exc
        answer(result)

    def _answer_send(
        self, conn: Conn, req: protocol.Request, client_msg_id: str, started: float, result: object
    ) -> None:
        conn.sends_in_flight -= 1
        if isinstance(result, Ack):
            metrics.MSGS_ACCEPTED.inc()
            answer = pb.UserSendMsgResp(
                serverMsgID=result.server_msg_id, clientMsgID=client_msg_id, sendTime=result.send_time
            )
            conn.respond(req.req_identifier, req.msg_incr, req.operation_id, answer)
            metrics.SEND_MSG_SECONDS.observe(time.monotonic() - started)
            return
        if isinstance(result, ImError):  # refused for this message alone (the receiver's options)
            err = result
        else:  # the batch failed, or its deadline passed (the batcher logged which, once per batch)
            err = ImError(SERVER_INTERNAL, "message was not accepted, send it again")
        _log_refusal(conn, req, err)
        conn.respond(req.req_identifier, req.msg_incr, req.operation_id, err=err)

    def read(self, conn: Conn, req: protocol.Request) -> Message:
        """The read requests (1001, 1002, 1005, 1006, 1007): always about the connection's own user."""
        request_cls, answer = READ_REQUESTS[req.req_identifier]
        body = protocol.decode_data(conn.sdk_type, req.data, request_cls)
        user_id = getattr(body, "userID", "")
        if user_id and user_id != conn.user_id:
            raise ImError(NO_PERMISSION, "userID is not the connection's user")
        return answer(conn.user_id, body)

    def logout(self, conn: Conn, req: protocol.Request) -> None:
        """2003: answered, then the connection is closed; its token is revoked, on REST too (the client
        logs in again with a new token to come back), and the device's push token is forgotten."""
        tokens.mark_token_kicked(conn.token, conn.token_expires_at - int(time.time()))
        push_tokens.forget_device(conn.user_id, conn.platform_id)  # a logged-out phone is not notified
        log.info("user %s logged out on platform %d", conn.user_id, conn.platform_id)
        gevent.spawn_later(0, self._end_session, conn)

    def _end_session(self, conn: Conn) -> None:
        self.hub.remove(conn)
        conn.close()

    def set_background(self, conn: Conn, req: protocol.Request) -> Message:
        """2004: an iOS app in the background stops counting as online for push (OpenIM)."""
        body = protocol.decode_data(conn.sdk_type, req.data, pb.SetAppBackgroundStatusReq)
        if body.userID and body.userID != conn.user_id:
            raise ImError(NO_PERMISSION, "userID is not the connection's user")
        conn.background = body.isBackground
        self.hub.refresh_online(conn.user_id, conn.platform_id)
        return pb.SetAppBackgroundStatusResp()

    def sub_online_status(self, conn: Conn, req: protocol.Request) -> Message:
        """2005: watch users' online platforms; answers their current state, then pushes changes."""
        body = protocol.decode_data(conn.sdk_type, req.data, pb.SubUserOnlineStatus)
        subscribe = validation.check_user_ids(body.subscribeUserID, "subscribeUserID")
        unsubscribe = validation.check_user_ids(body.unsubscribeUserID, "unsubscribeUserID")
        self.hub.watch(conn, subscribe, unsubscribe)
        online = get_online(subscribe)
        return pb.SubUserOnlineStatusTips(
            subscribers=[
                pb.SubUserOnlineStatusElem(
                    userID=user_id, onlinePlatformIDs=sorted({e.platform_id for e in online.get(user_id, [])})
                )
                for user_id in subscribe
            ]
        )

    # --- background greenlets ---

    def subscribe_pushes(self) -> None:
        """Consume this node's push channel forever, reconnecting through Redis outages."""
        while True:
            try:
                pubsub = get_redis().pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(push_channel(self.hub.node_id), ONLINE_EVENTS_CHANNEL)
                self.push_subscribed = True
                for message in pubsub.listen():
                    if message.get("type") != "message":
                        continue
                    # inline, in arrival order: delivery only queues frames on the sockets' outboxes
                    if message["channel"] == ONLINE_EVENTS_CHANNEL:
                        self._notify_raw(message["data"])
                    else:
                        self._deliver_raw(message["data"])
            except Exception:
                self.push_subscribed = False
                log.warning("push subscription lost; resubscribing", exc_info=True)
                gevent.sleep(1)

    def _deliver_raw(self, raw: str) -> None:
        try:
            payload = compact_json.loads(raw)  # written by the push worker with compact_json
            kick = payload.get("kick")
            if kick:
                self.hub.kick(kick["user_id"], set(kick["platforms"]), kick["except_conn"], kick["token"])
            else:
                self.hub.deliver(payload)
        except Exception:
            log.exception("bad push payload")

    def _notify_raw(self, raw: str) -> None:
        event = online_event(raw)
        if event is None:
            log.warning("bad online event %r", raw[:200])
            return
        self.hub.notify_watchers(event)

    def watch_liveness_forever(self) -> None:
        """Ping the connections quiet for GATEWAY_PING_SECONDS and close those silent past
        GATEWAY_READ_DEADLINE_SECONDS: one sweep over the node's connections every second (every
        quarter of the ping interval, when shorter), instead of a timer armed on every read of every
        socket. Pings go out in the second they fall due, as spread as the connections' quiet began."""
        period = max(0.05, min(LIVENESS_SWEEP_SECONDS, settings.gateway_ping_seconds / 4))
        while True:
            gevent.sleep(period)
            try:
                self.sweep_liveness(time.monotonic())
            except Exception:
                log.exception("liveness sweep failed")

    def sweep_liveness(self, now: float) -> None:
        ping_seconds, deadline = settings.gateway_ping_seconds, settings.gateway_read_deadline_seconds
        for i, conn in enumerate(self.hub.all_conns(), 1):
            if i % LIVENESS_SWEEP_SLICE == 0:
                gevent.sleep(0)  # let the frames waiting meanwhile be handled
            if conn.closing:
                continue
            action = conn.liveness(now, ping_seconds, deadline)
            if action == sessions.CLOSE:
                log.info("closing %s/%d: silent past the read deadline", conn.user_id, conn.platform_id)
                conn.close()
            elif action == sessions.PING:
                conn.ping(now)

    def renew_online_forever(self) -> None:
        while True:
            gevent.sleep(ONLINE_RENEW_SECONDS)
            try:
                self.hub.renew_online()
            except Exception:
                log.warning("renewing online state failed", exc_info=True)


def measured_flush(handle: Handler[Pending]) -> Handler[Pending]:
    """The batcher's handler, its flushes' sizes and publishing time recorded (gateway_flush_*)."""

    def flush(batches: dict[int, list[Pending]]) -> Mapping[int, ShardResults]:
        started = time.perf_counter()
        try:
            return handle(batches)
        finally:
            metrics.GATEWAY_FLUSH_SECONDS.observe(time.perf_counter() - started)
            metrics.GATEWAY_FLUSH_MESSAGES.observe(sum(map(len, batches.values())))

    return flush


def _text_ping(text: str) -> dict[str, Any] | None:
    """OpenIM's text ping `{"type":"ping","body":...}` (the web SDKs cannot send PING control frames)."""
    try:
        body = json.loads(text)
    except ValueError:
        return None
    return body if isinstance(body, dict) and body.get("type") == "ping" else None


# --- Flask app -------------------------------------------------------------------------------


def refused_over_http(query: dict[str, str]) -> bool:
    """Where a refused connection hears why. OpenIM's gateway (ws_server.go handlerError) answers in a
    text frame after the upgrade only when the client asked for a connection answer (isMsgResp);
    otherwise in the HTTP answer to the upgrade: 200 and {errCode, errMsg, errDlt}, which
    openim-sdk-core reads when its dial fails (a text frame would stop its reader for good). We do so
    for gob connections (no sdkType, or go); JSON clients keep their text-frame refusal."""
    if query.get("v"):
        try:
            info = json.loads(base64.urlsafe_b64decode(query["v"] + "=" * (-len(query["v"]) % 4)))
        except (ValueError, binascii.Error):
            return False
        if not isinstance(info, dict):
            return False
        sdk_type, msg_resp = info.get("sdkType", ""), info.get("sendResponse") is True
    else:
        sdk_type, msg_resp = query.get("sdkType", ""), query.get("isMsgResp", "") == "true"
    return protocol.SDK_ALIASES.get(str(sdk_type)) == protocol.SDK_GO and not msg_resp


def _log_refusal(conn: Conn, req: protocol.Request | None, err: ImError) -> None:
    log.info(
        "request from %s refused (%d): %s",
        conn.user_id,
        err.code,
        err.message,
        extra={"operationID": req.operation_id if req else "", "userID": conn.user_id, "errCode": err.code},
    )


def serve_connection(gateway: Gateway, conn: Conn) -> None:
    """Read and handle frames until the socket closes (ConnectionClosed). Pings and the read deadline
    are the node's liveness sweep (`Gateway.watch_liveness_forever`), not a timer on every read."""
    while True:
        frames = conn.ws.receive_messages()
        conn.last_alive = time.monotonic()
        for frame in frames:
            gateway.handle_frame(conn, frame)


def is_websocket_upgrade(environ: dict[str, Any]) -> bool:
    """What werkzeug's router calls a websocket request: `Connection: upgrade` and `Upgrade: websocket`."""
    connection = environ.get("HTTP_CONNECTION", "").lower().split(",")
    return environ.get("HTTP_UPGRADE", "").lower() == "websocket" and any(
        v.strip(" \t") == "upgrade" for v in connection
    )


class GatewayApp:
    """A gateway node's WSGI application: a websocket upgrade on "/" is served here, outside Flask;
    every other request goes to the web app (REST and probes: app/api/app.py).

    Under Flask (and flask-sock) a websocket's whole session ran inside its request: the request and
    app contexts, the parsed request and its headers, a URL adapter and a class made for each
    connection stayed alive as long as the socket, about 20 GC-tracked objects per connection that
    every full garbage collection scans, and that class (a type is always in a reference cycle) held
    the socket, so a closed connection was freed only by a full collection."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.web = web_app.create_app(gateway)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("PATH_INFO") != "/" or not is_websocket_upgrade(environ):
            return self.web(environ, start_response)
        query = {k: v for k, v in reversed(parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True))}
        admitted = self.admit(query, environ.get("HTTP_COMPRESSION", ""))
        if isinstance(admitted, Exception) and refused_over_http(query):
            # refused where OpenIM refuses a gob client: in the HTTP answer to the upgrade
            if isinstance(admitted, ImError):
                log.info("connection refused (%d): %s", admitted.code, admitted.message)
                err = admitted
            else:
                log.error("login failed", exc_info=admitted)
                err = ImError(SERVER_INTERNAL, "login failed, retry")
            answer: Any = self.web.json.response({"errCode": err.code, "errMsg": err.message, "errDlt": ""})
            return answer(environ, start_response)
        try:
            ws = InlineServer(environ, max_message_size=protocol.MAX_FRAME_BYTES)
        except Exception:
            log.info("websocket handshake refused", exc_info=True)
            start_response("400 Bad Request", [("Content-Type", "text/plain"), ("Connection", "close")])
            return [b"bad websocket handshake"]
        websocket_session(self.gateway, ws, admitted, query.get("operationID", ""))
        # pywsgi: the socket was the websocket's; nothing more is written on it (as flask-sock did)
        return []

    def admit(self, query: dict[str, str], header_compression: str) -> tuple[ConnArgs, TokenClaims] | Exception:
        """The connection's parameters, token and this node's room, checked before the upgrade, so a
        refusal can be the HTTP answer where OpenIM gives it there (refused_over_http)."""
        try:
            args = parse_conn_args(query, header_compression)
            admitted = (args, authenticate(args))
            self.gateway.check_admission()
        except Exception as exc:
            return exc
        return admitted


def websocket_session(
    gateway: Gateway, ws: Any, admitted: tuple[ConnArgs, TokenClaims] | Exception, operation_id: str
) -> None:
    """One websocket, from the upgrade to its end: refused in a text frame, or logged in and served."""
    ws.sock = WholeWrites(ws.sock)  # before anything is written: whole frames, one writer at a time
    drop_handshake(ws)
    try:
        if isinstance(admitted, Exception):
            raise admitted
        args, claims = admitted
        conn = Conn(
            ws,
            args,
            claims.expires_at,
            settings.gateway_rate_limit,
            settings.gateway_rate_burst,
            outbox_max_bytes=settings.gateway_outbox_max_bytes,
            on_abort=gateway.hub.remove,  # a client too slow to read goes offline with its socket
        )
        gateway.login(conn)
    except ImError as err:
        log.info("connection refused (%d): %s", err.code, err.message)
        _refuse_websocket(ws, err.code, err.message, WS_POLICY_VIOLATION, err.message[:120])
        return
    except Exception:
        # e.g. Redis unreachable: tell the client and close, so it retries (never a half-open socket)
        log.exception("login failed")
        _refuse_websocket(ws, SERVER_INTERNAL, "login failed, retry", WS_INTERNAL_ERROR, "login failed")
        return
    log.info(
        "user %s connected on platform %d",
        conn.user_id,
        conn.platform_id,
        extra={"userID": conn.user_id, "platformID": conn.platform_id, "operationID": operation_id},
    )
    try:
        if args.is_msg_resp:
            conn.answer_connection()  # OpenIM's connection answer: a text frame, in every encoding
        serve_connection(gateway, conn)
    except ConnectionClosed as closed:  # the client closed: the normal end of a session, no traceback
        log.info("%s/%d closed the connection (%s)", conn.user_id, conn.platform_id, closed.reason)
    except Exception:
        # never out to the server: an error answer would be HTTP bytes written into the websocket stream
        log.exception("session of %s/%d failed", conn.user_id, conn.platform_id)
    finally:
        gateway.hub.remove(conn)
        conn.finish()
        _close_websocket(ws)
        log.info("user %s disconnected from platform %d", conn.user_id, conn.platform_id)


def _refuse_websocket(ws: Any, code: int, message: str, close_code: int, close_message: str) -> None:
    try:
        ws.send(json.dumps({"errCode": code, "errMsg": message, "errDlt": ""}))
        ws.close(reason=close_code, message=close_message)
    except Exception:  # the client is gone already
        log.debug("refusal not delivered", exc_info=True)
    _close_websocket(ws)


def _close_websocket(ws: Any) -> None:
    end_websocket(ws)
    try:
        ws.close()  # no-op when closed already (flask-sock's last step)
    except Exception:
        pass
    release_parser(ws)


def create_app(gateway: Gateway) -> GatewayApp:
    """The gateway's WSGI application: the websocket route and the web app (app/api/app.py)."""
    return GatewayApp(gateway)


def shut_down(gateway: Gateway, server: Any, settlements: LaterSettlements | None = None) -> None:
    """SIGTERM: stop accepting, answer every SendMsg already taken (and confirm their answers, so a
    client resending to another node is answered without a second publish), then close the sockets
    with 1001 (going away) so clients reconnect to another node, and leave the online state clean."""
    if gateway.draining:
        return
    gateway.draining = True
    log.info("shutting down: no new connections; draining %d messages in flight", gateway.batcher.in_flight)
    server.close()  # the listening socket: new connections go to other nodes
    if not gateway.batcher.drain(settings.gateway_publish_timeout_seconds):
        log.warning("%d messages still unanswered at shutdown; their clients resend", gateway.batcher.in_flight)
    if settlements is not None:
        settlements.flush()
    gevent.sleep(0.2)  # let the answers reach the outboxes
    conns = gateway.hub.all_conns()
    for conn in conns:
        gateway.hub.remove(conn)
        conn.close(WS_GOING_AWAY)
    gevent.joinall([c.writer for c in conns], timeout=5)
    log.info("gateway %s stopped (%d connections closed)", gateway.hub.node_id, len(conns))
    server.stop(timeout=1)


def serve() -> None:
    """Run the gateway until killed (the caller has already monkey-patched with gevent)."""
    from gevent.pywsgi import LoggingLogAdapter

    if settings.multi_login_policy not in LOGIN_POLICIES:
        raise SystemExit(f"MULTI_LOGIN_POLICY must be one of {LOGIN_POLICIES}")
    check_webhooks()
    mongo.ensure_indexes()
    settlements = LaterSettlements(SETTLE_AFTER_SECONDS, gevent.spawn_later)
    batcher: ShardBatcher[Pending] = ShardBatcher(
        # confirmations off the answer's path, sent with the next flush's reservations
        measured_flush(functools.partial(accept_shard_batches, settlements=settlements)),
        settings.batch_linger_ms / 1000.0,
        settings.batch_max_msgs,
        settings.batch_linger_max_ms / 1000.0,
        deadline_seconds=settings.gateway_publish_timeout_seconds,  # a SendMsg is answered within it
    )
    gateway = Gateway(settings.node_id, batcher)
    gevent.spawn(gateway.subscribe_pushes)
    gevent.spawn(gateway.renew_online_forever)
    gevent.spawn(gateway.watch_liveness_forever)
    # pywsgi's own complaints (e.g. a client's bytes after its websocket closed) as debug records
    http_errors = LoggingLogAdapter(logging.getLogger("app.gateway.http"), logging.DEBUG)
    server = GuardedServer(
        (settings.gateway_host, settings.gateway_port),
        create_app(gateway),
        gateway.sockets,  # every socket counted and capped, each request read within a deadline
        log=None,
        error_log=http_errors,
    )
    stopping: list[gevent.Greenlet] = []
    tune_gc(settings.gc_gen0_threshold)  # after start-up: what exists now lives as long as the node
    freezing = settings.gc_freeze_survivors and settings.gc_gen0_threshold > 0
    watch_gc(freeze_survivors=freezing)
    if freezing and settings.gc_thaw_seconds > 0:
        gevent.spawn(thaw_forever, settings.gc_thaw_seconds, gevent.sleep)

    def on_signal() -> None:
        stopping.append(gevent.spawn(shut_down, gateway, server, settlements))

    gevent.signal_handler(signal.SIGTERM, on_signal)
    gevent.signal_handler(signal.SIGINT, on_signal)
    log.info(
        "gateway %s listening on ws://%s:%d/ (pid %d)",
        settings.node_id,
        settings.gateway_host,
        settings.gateway_port,
        os.getpid(),
    )
    server.serve_forever()  # returns once shut_down closed the listening socket
    gevent.joinall(stopping)

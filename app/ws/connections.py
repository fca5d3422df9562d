"""One gateway node's sockets: each client connection, and the hub that finds them by user.

Every write to a socket goes through the connection's outbox and one writer greenlet, so responses,
pushes, kicks and pings reach the client in the order they were produced; frames with nothing queued
or being written before them are written by the node's next write pass instead, when the socket takes
them without waiting (sockets.WholeWrites.send_now), which keeps that order. The hub keeps the node's
part of the shared online state in Redis (which platforms of which user are connected here) and
the node-local 2005 subscriptions.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.queue import Full, Queue
from google.protobuf.message import Message
from wsproto.events import Ping

from app.core import protocol, push_frames
from app.core.errors import ARGS_ERROR, ImError
from app.core.sessions import TokenBucket, counts_as_online, liveness_action
from app.ops import metrics
from app.pipeline import webhooks
from app.proto import sdkws_pb2 as pb
from app.store.redis import tokens
from app.store.redis.online import clear_online, clear_online_many, publish_online_change, set_online_many
from app.ws import sockets
from app.ws.frames import OP_PING, control_frame, data_frame

log = logging.getLogger(__name__)

OUTBOX_LIMIT = 1000  # frames queued for one socket before it counts as too slow
WRITE_COALESCE_FRAMES = 64  # queued frames the writer sends in one write
OUTBOX_MAX_BYTES = 4 * 1024 * 1024  # bytes likewise (the gateway passes GATEWAY_OUTBOX_MAX_BYTES)
CLOSE_FLUSH_SECONDS = 5.0  # how long a closing connection's writer may take to get its close frame out
MAX_SUBSCRIPTIONS = 1000  # users one connection may watch with 2005
RENEW_BATCH_USERS = 500  # users whose online entries one Redis round trip renews


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


class _Control:
    """Outbox items that are not frames."""

    def __init__(self, name: str) -> None:
        self.name = name


PING = _Control("ping")
CLOSE = _Control("close")


# Connections with frames for the next write pass: one greenlet per pass writes all of them, after
# the greenlet that produced them (a flush answering its acks, a push payload) has yielded. One
# switch per pass instead of a writer greenlet's wakeup per frame, and a connection's frames of
# one pass go out in one send (as its writer coalesces what is queued).
_unwritten: list[Conn] = []


def _write_pass() -> None:
    conns = _unwritten[:]
    _unwritten.clear()
    for conn in conns:
        try:
            conn._write_direct()
        except Exception:
            log.exception("writing to %s/%d failed", conn.user_id, conn.platform_id)


class Conn:
    def __init__(
        self,
        ws: Any,
        args: ConnArgs,
        token_expires_at: int = 0,
        rate: float = 0.0,
        burst: float = 0.0,
        *,
        outbox_max_bytes: int = OUTBOX_MAX_BYTES,
        on_abort: Callable[[Conn], None] | None = None,
    ) -> None:
        self.ws = ws
        self.user_id = args.send_id
        self.platform_id = args.platform_id
        self.sdk_type = args.sdk_type
        self.gzip = args.compression == "gzip"
        self.token = args.token
        self.token_expires_at = token_expires_at
        self.background = args.is_background
        self.conn_id = uuid.uuid4().hex
        self.watching: set[str] = set()
        self.limiter = TokenBucket(rate, burst)
        self.rate_limited = False
        self.sends_in_flight = 0  # SendMsgs handed to the batcher, not answered yet (the gateway's)
        self.last_alive = time.monotonic()
        self.last_ping = 0.0
        self.closing = False  # the close frame is queued or written
        self.close_deadline: gevent.Greenlet | None = None  # shuts the socket if the session outlives a close
        self._outbox: Queue[bytes | str | _Control] = Queue(maxsize=OUTBOX_LIMIT)
        self._outbox_bytes = 0  # queued, or being written: counted down once on the socket
        self.outbox_max_bytes = outbox_max_bytes
        self.on_abort = on_abort  # the gateway's: the session ends (hub, online state) with the socket
        self.aborted = False
        self.close_code: int | None = None
        self.expiry_timer: Any = None  # the gateway's loop timer closing the socket when its token expires
        # Frames may go to the node's write pass instead of the writer (`_enqueue`): known once the
        # writer has started and found the socket's frames plain (no extension) and its writes whole.
        self._plain = False
        self._writer_busy = False
        self._direct: list[bytes | str] = []  # frames waiting for the node's next write pass
        self.writer = gevent.spawn(self._write_forever)

    @property
    def pushable(self) -> bool:
        return counts_as_online(self.platform_id, self.background)

    def send_frame(self, frame: bytes) -> None:
        """One envelope, already in the connection's encoding (protocol.encode_response): binary."""
        self._enqueue(protocol.gzip_frame(frame) if self.gzip else frame)

    def send_encoded(self, frame: bytes) -> None:
        """One envelope in the connection's encoding, already gzipped if the connection asked for it."""
        self._enqueue(frame)

    # The only text frames a connection ever gets: OpenIM's connection answer (isMsgResp, before any
    # envelope) and the pong to a text ping. Any other text frame ends openim-sdk-core's read loop.
    def answer_connection(self) -> None:
        self._enqueue(json.dumps({"errCode": 0, "errMsg": "", "errDlt": ""}))

    def pong(self, body: Any = None) -> None:
        """The ping's body comes back, as OpenIM's gateway echoes it: openim-sdk-core's web build reads
        the pong's `body` as a JSON string (null when the ping had none) and stops on anything else."""
        self._enqueue(json.dumps({"type": "pong", "body": body}))

    def _enqueue(self, item: bytes | str | _Control) -> None:
        if self.aborted:
            return
        if self._direct:
            if not isinstance(item, _Control):  # a data frame follows those waiting for the pass
                self._direct.append(item)
                return
            self._spill()  # a ping goes through the outbox: what waits for the pass goes first
        elif self._plain and not isinstance(item, _Control) and self._nothing_before():
            # Nothing is queued or being written: the frame waits for the node's next write pass,
            # which writes every such connection's frames in one send each (see `_write_pass`).
            self._direct.append(item)
            if not _unwritten:
                gevent.spawn(_write_pass)
            _unwritten.append(self)
            return
        self._to_outbox(item)

    def _nothing_before(self) -> bool:
        """No frame is queued or being written, and data frames may still go out."""
        return not self._writer_busy and not self._outbox.qsize() and not self.closing and self.ws.connected

    def _spill(self) -> None:
        items, self._direct = self._direct, []
        for item in items:
            self._to_outbox(item)

    def _write_direct(self) -> None:
        """This connection's part of a write pass: its frames in one send when the socket takes it
        without waiting; else (or if the writer got busy meanwhile) they go through the outbox."""
        items, self._direct = self._direct, []
        if not items or self.aborted:
            return
        if not (self._nothing_before() and self.ws.sock.send_now(b"".join([data_frame(i) for i in items]))):
            for item in items:
                self._to_outbox(item)

    def _to_outbox(self, item: bytes | str | _Control) -> None:
        if self.aborted:
            return
        size = 0 if isinstance(item, _Control) else len(item)
        # one frame always fits in an empty outbox (a large answer is not a slow reader)
        over_bytes = self._outbox_bytes > 0 and self._outbox_bytes + size > self.outbox_max_bytes
        if over_bytes or self._outbox.full():
            # The client reads slower than we write: drop it; it reconnects and pulls what it missed.
            log.warning(
                "closing %s/%d: not reading, its outbox holds %d frames and %d bytes unsent",
                self.user_id,
                self.platform_id,
                self._outbox.qsize(),
                self._outbox_bytes,
                extra={"userID": self.user_id, "platformID": self.platform_id},
            )
            metrics.GATEWAY_SOCKETS_DROPPED.labels(reason="slow_reader").inc()
            self.abort()
            return
        self._outbox_bytes += size
        self._outbox.put_nowait(item)

    def _write_forever(self) -> None:
        plain = sockets.frames_are_plain(self.ws)
        self._plain = plain and hasattr(self.ws.sock, "send_now")  # WholeWrites: the gateway's sockets
        while True:
            self._writer_busy = False
            item = self._outbox.get()
            self._writer_busy = True  # before anything here can wait: a frame taken is not written yet
            try:
                if item is CLOSE:
                    # not when the client closed first: simple_websocket has answered it already
                    if getattr(self.ws, "connected", True):
                        self.ws.close(reason=self.close_code) if self.close_code else self.ws.close()
                    return
                if isinstance(item, _Control):  # PING
                    # simple_websocket only pings on its own timer for every socket; this ping goes
                    # through the writer so it never interleaves with a frame being written.
                    self.ws.sock.send(control_frame(OP_PING) if plain else self.ws.ws.send(Ping()))
                    continue
                if not plain:
                    self.ws.send(item)  # wsproto applies the negotiated extension
                    self._outbox_bytes -= len(item)
                    continue
                # what else is queued goes out in the same write (one system call, one wakeup)
                frames = [item]
                while len(frames) < WRITE_COALESCE_FRAMES and self._outbox.qsize():
                    queued = self._outbox.peek_nowait()
                    if isinstance(queued, _Control):
                        break
                    frames.append(queued)
                    self._outbox.get_nowait()
                if not self.ws.connected:  # the client's close was answered: no more data frames
                    return
                self.ws.sock.send(b"".join([data_frame(f) for f in frames]))
                self._outbox_bytes -= sum(len(f) for f in frames)
            except Exception:
                log.info("write to %s/%d failed: connection gone", self.user_id, self.platform_id)
                return

    # --- liveness: server pings, and the read deadline ---

    def ping(self, now: float) -> None:
        self.last_ping = now
        self.ws.pong_received = False
        self._enqueue(PING)

    def liveness(self, now: float, ping_seconds: float, deadline: float) -> str:
        """sessions.liveness_action for this connection; a pong since the last sweep (simple_websocket's
        flag, taken down here) counts as a frame."""
        if getattr(self.ws, "pong_received", False):
            self.ws.pong_received = False
            self.last_alive = now
        return liveness_action(now, self.last_alive, self.last_ping, ping_seconds, deadline)

    # --- ending the session ---

    def close(self, code: int | None = None) -> None:
        """Write what is queued, then close the socket (with this close code, if given). The session's
        read ends when the client answers the close frame, or when the socket is shut: at the latest
        CLOSE_FLUSH_SECONDS (the writer's time to get the frame out) plus the grace after this call."""
        if self.aborted or self.closing:
            return
        if not self._queue_close(code):
            return
        self.close_deadline = gevent.spawn_later(
            CLOSE_FLUSH_SECONDS + sockets.CLOSE_GRACE_SECONDS, sockets.shutdown_quietly, getattr(self.ws, "sock", None)
        )

    def _queue_close(self, code: int | None) -> bool:
        self.closing = True
        self._spill()  # the close frame after every frame produced before it
        self.close_code = code
        try:
            self._outbox.put_nowait(CLOSE)
        except Full:
            self.abort()
            return False
        return True

    def abort(self) -> None:
        """Drop the connection at once with what is queued, and end its session (on_abort). No
        close frame: the socket may be full, and writing to it would block the caller (e.g. the
        node's push delivery). Shutting the socket wakes the session's read loop, which ends."""
        if self.aborted:
            return
        self.aborted = True
        self.writer.kill(block=False)
        if self.on_abort is not None:
            try:
                self.on_abort(self)
            except Exception:
                log.warning("ending the session of %s/%d failed", self.user_id, self.platform_id, exc_info=True)
        sockets.shut(getattr(self.ws, "sock", None))

    def finish(self, timeout: float = CLOSE_FLUSH_SECONDS) -> None:
        """The session ended (its read is over): let the writer flush and stop."""
        if self.expiry_timer is not None:
            self.expiry_timer.close()
            self.expiry_timer = None
        if not self.aborted and not self.closing:
            self._queue_close(None)
        self.writer.join(timeout=timeout)
        if self.close_deadline is not None:
            self.close_deadline.kill(block=False)
            self.close_deadline = None

    def kick(self) -> None:
        """OpenIM's 2002: tell the client another login replaced it, then close."""
        self.send_frame(protocol.encode_response(protocol.KICK_ONLINE_MSG, "", "", sdk_type=self.sdk_type))
        self.close()

    def respond(
        self, req_id: int, msg_incr: str, operation_id: str, data: Message | None = None, err: ImError | None = None
    ) -> None:
        try:
            frame = protocol.encode_response(
                req_id,
                msg_incr,
                operation_id,
                data,
                sdk_type=self.sdk_type,
                err_code=err.code if err else 0,
                err_msg=err.message if err else "",
            )
        except Exception:
            # a request whose own fields cannot go back in its envelope (e.g. a reqIdentifier gob cannot
            # carry): still one answer, a 3001 without them, and the connection goes on
            log.info("answer to %s/%d not encodable: 3001", self.user_id, self.platform_id, exc_info=True)
            frame = protocol.encode_response(
                protocol.DATA_ERROR,
                "",
                "",
                sdk_type=self.sdk_type,
                err_code=ARGS_ERROR,
                err_msg="the request's envelope fields cannot be answered",
            )
        self.send_frame(frame)


class Hub:
    """This node's open connections by user, their share of the online state, and 2005 watchers."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self._by_user: dict[str, set[Conn]] = {}
        self._watchers: dict[str, set[Conn]] = {}
        # kept as connections come and go: every admission asks, and summing over all users made
        # a connection storm quadratic (16% of the gateway's samples at 10,000 connections)
        self._count = 0

    def add(self, conn: Conn) -> None:
        conns = self._by_user.setdefault(conn.user_id, set())
        new_platform = not any(c.platform_id == conn.platform_id for c in conns)
        if conn not in conns:
            self._count += 1
        conns.add(conn)
        self.refresh_online(conn.user_id, conn.platform_id)
        if new_platform:
            publish_online_change(conn.user_id)
            webhooks.user_status_changed(
                "afterUserOnline", conn.user_id, conn.platform_id, conn.conn_id, not conn.pushable
            )

    def remove(self, conn: Conn) -> None:
        """Idempotent: the session's end and a kick may both remove the same connection."""
        for watched in conn.watching:
            self._watchers.get(watched, set()).discard(conn)
        conn.watching.clear()
        conns = self._by_user.get(conn.user_id)
        if conns is None or conn not in conns:
            return
        conns.discard(conn)
        self._count -= 1
        if not conns:
            del self._by_user[conn.user_id]
        if any(c.platform_id == conn.platform_id for c in conns):
            return
        webhooks.user_status_changed("afterUserOffline", conn.user_id, conn.platform_id, conn.conn_id, False)
        try:
            clear_online(conn.user_id, conn.platform_id, self.node_id)
            publish_online_change(conn.user_id)
        except Exception:  # Redis down: the entry expires by itself
            log.warning("could not clear online state of %s", conn.user_id, exc_info=True)

    def all_conns(self) -> list[Conn]:
        return [c for conns in self._by_user.values() for c in conns]

    def conns_of(self, user_id: str) -> list[Conn]:
        return list(self._by_user.get(user_id, ()))

    def connection_count(self) -> int:
        return self._count

    def user_count(self) -> int:
        return len(self._by_user)

    def refresh_online(self, user_id: str, platform_id: int) -> None:
        """This node's entry for one platform of a user."""
        entries = [e for e in self._online_entries(user_id) if e[1] == platform_id]
        if entries:
            set_online_many(entries, self.node_id)

    def _online_entries(self, user_id: str) -> list[tuple[str, int, bool]]:
        """(user, platform, background) of this node's entries for one user: a platform's entry is
        background only when every socket of it is."""
        platforms: dict[int, bool] = {}
        for conn in self._by_user.get(user_id, ()):
            platforms[conn.platform_id] = platforms.get(conn.platform_id, False) or conn.pushable
        return [(user_id, platform, not pushable) for platform, pushable in platforms.items()]

    def renew_online(self, batch_users: int = RENEW_BATCH_USERS) -> int:
        """Renew this node's online entries before they expire: one Redis round trip per `batch_users`
        users (one per user took 10,000 sequential round trips at 10,000 connections). A user who
        left while its batch was on the way is cleared again after it, so no entry outlives its
        socket. Returns the entries renewed."""
        users = list(self._by_user)
        renewed = 0
        for start in range(0, len(users), batch_users):
            entries = [e for user_id in users[start : start + batch_users] for e in self._online_entries(user_id)]
            if not entries:
                continue
            set_online_many(entries, self.node_id)
            renewed += len(entries)
            gone = [
                (user_id, platform)
                for user_id, platform, _ in entries
                if not any(c.platform_id == platform for c in self._by_user.get(user_id, ()))
            ]
            if gone:
                clear_online_many(gone, self.node_id)
        return renewed

    def kick(self, user_id: str, platforms: set[int], except_conn: str, new_token: str) -> int:
        """Push out a user's older logins on these platforms (a newer login's policy said so)."""
        kicked = 0
        for conn in self.conns_of(user_id):
            if conn.platform_id not in platforms or conn.conn_id == except_conn:
                continue
            self.remove(conn)
            if conn.token == new_token:
                conn.close()  # the same client reconnecting: its old socket just goes away
                continue
            tokens.mark_token_kicked(conn.token, conn.token_expires_at - int(time.time()))
            conn.kick()
            kicked += 1
        return kicked

    # --- 2005 online-status subscriptions ---

    def watch(self, conn: Conn, subscribe: list[str], unsubscribe: list[str]) -> None:
        for user_id in unsubscribe:
            conn.watching.discard(user_id)
            self._watchers.get(user_id, set()).discard(conn)
        for user_id in subscribe:
            if len(conn.watching) >= MAX_SUBSCRIPTIONS and user_id not in conn.watching:
                break
            conn.watching.add(user_id)
            self._watchers.setdefault(user_id, set()).add(conn)

    def notify_watchers(self, event: dict[str, Any]) -> int:
        watchers = self._watchers.get(str(event.get("userID", "")))
        if not watchers:
            return 0
        tips = pb.SubUserOnlineStatusTips(
            subscribers=[pb.SubUserOnlineStatusElem(userID=event["userID"], onlinePlatformIDs=event["platformIDs"])]
        )
        frames: dict[str, bytes] = {}
        for conn in list(watchers):
            frame = frames.get(conn.sdk_type)
            if frame is None:
                frame = frames[conn.sdk_type] = protocol.encode_response(
                    protocol.SUB_USER_ONLINE_STATUS, "", "", tips, sdk_type=conn.sdk_type
                )
            conn.send_frame(frame)
        return len(watchers)

    # --- pushes routed to this node ---

    def deliver(self, payload: dict[str, Any]) -> int:
        """Write one push (routed to this node by the push stage) to the recipients' sockets."""
        received = sent = offline = 0
        try:
            for delivery in payload.get("deliveries", []):
                received += 1
                # each frame encoded once per (encoding, gzip), for every recipient socket on this node
                frames = push_frames.PushFrames(push_frames.push_runs(delivery["conversation_id"], delivery["msgs"]))
                msgs = len(delivery["msgs"])  # counted per message and socket, however many frames carry them
                for user_id in delivery["users"]:
                    targets = [c for c in self._by_user.get(user_id, ()) if c.pushable]
                    if not targets:
                        offline += msgs
                    for conn in targets:
                        for frame in frames.frames(conn.sdk_type, conn.gzip):
                            conn.send_encoded(frame)
                        sent += msgs
        finally:  # counted once per payload, as far as it got
            metrics.PUSH_DELIVERIES_RECEIVED.inc(received)
            if offline:
                metrics.ONLINE_PUSH_FAILED.inc(offline)
            if sent:
                metrics.ONLINE_PUSH_SUCCESS.inc(sent)
        return sent


def online_event(raw: str) -> dict[str, Any] | None:
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(event, dict) or not isinstance(event.get("platformIDs"), list):
        return None
    return event

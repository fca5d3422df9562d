"""The gateway's sockets before and after their websocket session: every one counted and capped.

gevent's WSGIServer would hold a socket that never sends its HTTP request forever, and accept any
number of them. Here a request must arrive within GATEWAY_HANDSHAKE_TIMEOUT; the sockets still
waiting for theirs are at most GATEWAY_MAX_PENDING_SOCKETS (the oldest makes room for a new one, so
idle sockets cannot lock out real clients); and all sockets together (websockets, REST, and those
waiting) are at most GATEWAY_MAX_SOCKETS: beyond it a new socket is closed at once.
"""

from __future__ import annotations

import logging
import resource
import socket
import struct
from typing import Any

import gevent
from gevent.lock import Semaphore
from gevent.pywsgi import WSGIHandler, WSGIServer
from gevent.socket import socket as GeventSocket
from simple_websocket import ConnectionClosed, Server
from wsproto.utilities import LocalProtocolError

from app.ops import metrics
from app.ws import frames

log = logging.getLogger(__name__)

CLOSE_GRACE_SECONDS = 2.0  # how long a client may take to answer the server's close frame
RECEIVE_BYTES = 16384  # one read of a websocket takes up to this much (several frames when they queued up)
# Connections the kernel completes before the gateway accepts them (gevent's default is 128; Linux
# caps it at net.core.somaxconn). A storm of 10,000 clients, 200 handshakes at a time, overflowed 128
# some 40-60 times a run: each overflow costs that client a SYN retransmission (1 s, then 3 s...).
LISTEN_BACKLOG = 1024
_REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"


class RequestTimeout(BaseException):
    """The request did not arrive in time. A BaseException so that pywsgi's `except Exception`
    around request parsing (which answers 400) lets it through to GuardedHandler."""


class SocketGuard:
    """This node's socket counts and limits (one per server; the gateway reads them for /healthz)."""

    def __init__(self, max_sockets: int, max_pending: int, handshake_timeout: float) -> None:
        self.max_sockets = max_sockets
        self.max_pending = max(1, max_pending)
        self.handshake_timeout = handshake_timeout
        self.open = 0
        self.pending: dict[GuardedHandler, None] = {}  # insertion order: the oldest first
        self.refusing = False

    def admit(self) -> bool:
        """Count a new socket in, or say no when the node holds its maximum (logged once per episode)."""
        if self.open >= self.max_sockets:
            if not self.refusing:
                self.refusing = True
                log.warning("refusing new sockets: %d open (GATEWAY_MAX_SOCKETS)", self.open)
            metrics.GATEWAY_SOCKETS_DROPPED.labels(reason="over_cap").inc()
            return False
        if self.refusing:
            self.refusing = False
            log.info("accepting sockets again (%d open)", self.open)
        self.open += 1
        return True

    def release(self) -> None:
        self.open -= 1

    def waiting(self, handler: GuardedHandler) -> None:
        """A socket starts waiting for its request; past the pending cap the oldest waiter is dropped."""
        while len(self.pending) >= self.max_pending:
            oldest = next(iter(self.pending))
            del self.pending[oldest]
            oldest.evict()
        self.pending[handler] = None

    def done_waiting(self, handler: GuardedHandler) -> None:
        self.pending.pop(handler, None)


class GuardedHandler(WSGIHandler):  # type: ignore[misc]
    """pywsgi's handler with a deadline on reading each request, and no keep-alive after a websocket."""

    server: GuardedServer
    _timer: gevent.Timeout | None = None
    _evicted = False

    def handle_one_request(self) -> Any:
        guard = self.server.guard
        self._timer = gevent.Timeout.start_new(guard.handshake_timeout or None, RequestTimeout)
        guard.waiting(self)
        try:
            return super().handle_one_request()
        except RequestTimeout:
            reason = "evicted" if self._evicted else "handshake_timeout"
            log.debug("closing %s: no complete request (%s)", self.client_address, reason)
            metrics.GATEWAY_SOCKETS_DROPPED.labels(reason=reason).inc()
            return None  # pywsgi's handle() closes the socket
        finally:
            self._stop_waiting()

    def handle_one_response(self) -> None:
        # The request is in: from here the application governs the socket (for a websocket, its
        # read deadline and pings), so no deadline of ours may linger on it.
        self._stop_waiting()
        if self._evicted:
            raise RequestTimeout  # evicted while its last bytes were arriving: dropped all the same
        super().handle_one_response()
        if self.environ.get("HTTP_UPGRADE", "").lower() == "websocket":
            # The session is over: the socket carries no further HTTP request. Closing it now (not
            # waiting for the client's next request) lets a client's close() return at once.
            self.close_connection = True

    def _stop_waiting(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.server.guard.done_waiting(self)

    def evict(self) -> None:
        """Called from another greenlet: wake this handler's read with end-of-file; it then closes."""
        self._evicted = True
        shutdown_quietly(getattr(self, "socket", None))


class OneDescriptorSocket(GeventSocket):  # type: ignore[misc]
    """An accepted socket that refuses dup(). simple_websocket dups the socket it takes from pywsgi
    unless dup() raises NotImplementedError; the dup cost a second file descriptor per websocket, and
    10,000 websockets then met a 20,000 descriptor limit (EMFILE: accepting paused, ~1% of a
    connection storm failed). Undup'ed, the websocket shares pywsgi's socket object: the reader's
    close() is deferred by pywsgi's own reference to it (makefile), as a dup's would have been."""

    __slots__ = ()

    def dup(self) -> Any:
        raise NotImplementedError("one descriptor per connection")


class GuardedServer(WSGIServer):  # type: ignore[misc]
    handler_class = GuardedHandler
    backlog = LISTEN_BACKLOG

    def __init__(self, listener: Any, application: Any, guard: SocketGuard, **kwargs: Any) -> None:
        super().__init__(listener, application, **kwargs)
        self.guard = guard
        reserve_descriptors(guard.max_sockets)

    def do_read(self) -> tuple[Any, Any] | None:
        """gevent's StreamServer.do_read, with the accepted socket as a OneDescriptorSocket."""
        listener = self.socket
        try:
            fd, address = listener._accept()
        except BlockingIOError:
            if not listener.timeout:
                return None
            raise
        return OneDescriptorSocket(listener.family, listener.type, listener.proto, fileno=fd), address

    def handle(self, sock: Any, address: Any) -> None:
        if not self.guard.admit():
            refuse(sock)
            return
        try:
            super().handle(sock, address)
        finally:
            self.guard.release()


def reserve_descriptors(max_sockets: int) -> None:
    """A socket holds one file descriptor (OneDescriptorSocket): raise the soft limit to what the cap
    needs, and warn when the hard limit is lower (the cap would then be reached as EMFILE, which
    pauses accepting for every client)."""
    need = max_sockets + 256  # and Redis, MongoDB and broker connections, log files
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY and soft < need:
        log.warning(
            "GATEWAY_MAX_SOCKETS=%d needs about %d file descriptors but the limit is %d:"
            " lower GATEWAY_MAX_SOCKETS (and GATEWAY_MAX_CONNS) or raise `ulimit -n`",
            max_sockets,
            need,
            soft,
        )


def refuse(sock: Any) -> None:
    """Tell the client (if it can take it without waiting) and close."""
    try:
        sock.settimeout(0)
        sock.send(_REFUSAL)
    except OSError:
        pass
    finally:
        sock.close()


def shut(sock: Any) -> None:
    """End a TCP connection now, whichever greenlets still read or write it: pending output is
    discarded (linger 0), and readers see end-of-file."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except (OSError, AttributeError):
        pass


class WholeWrites:
    """A websocket's socket for simple_websocket, which writes each frame with one socket.send():
    under gevent that may write part of a frame when the socket's buffer is full, and the rest is
    lost. The session's reads (answering pings and closes) and our writer also share the socket.
    Here every write is whole, and one at a time."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self._writing = Semaphore()

    def send(self, data: bytes) -> int:
        with self._writing:
            # one send() takes a whole frame unless the buffer is full; sendall asks the socket
            # for its buffer size on every call (3% of the gateway under load)
            sent = self.raw.send(data)
            if sent < len(data):
                self.raw.sendall(memoryview(data)[sent:])
        return len(data)

    def send_now(self, data: bytes) -> bool:
        """Write `data` without ever waiting, if nothing else is being written: True when it went to
        the socket whole, or in part with the rest following before any other write (a greenlet of
        its own, holding the lock); False when it was not written at all (the caller queues it)."""
        if not self._writing.acquire(blocking=False):
            return False
        try:
            sent = self.raw.send(data, 0, timeout=0.0)  # gevent's: raises instead of waiting
        except OSError:  # the buffer is full (BlockingIOError), or the socket gone: the writer's case
            self._writing.release()
            return False
        if sent < len(data):
            gevent.spawn(self._finish, memoryview(data)[sent:])
        else:
            self._writing.release()
        return True

    def _finish(self, rest: memoryview) -> None:
        try:
            self.raw.sendall(rest)
        except OSError:
            pass  # the connection is gone: its writer and reader find out for themselves
        finally:
            self._writing.release()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def frames_are_plain(ws: Any) -> bool:
    """Whether the open websocket's frames carry no extension (permessage-deflate was not
    negotiated): then app/ws/frames.py reads and writes them as wsproto would."""
    proto = getattr(getattr(getattr(ws, "ws", None), "connection", None), "_proto", None)
    return proto is not None and not proto.extensions


class _NotStarted:
    """simple_websocket's reader "thread", never started: the session's own greenlet reads the socket
    (`InlineServer.receive_messages`)."""

    __slots__ = ("name",)

    def __init__(self, target: Any) -> None:
        self.name = ""

    def start(self) -> None:
        pass

    def is_alive(self) -> bool:
        return False


class _NoWaiters:
    """simple_websocket's "message arrived" event: nobody waits on it when the reader is the session."""

    __slots__ = ()

    def set(self) -> None:
        pass

    def clear(self) -> None:
        pass


class InlineServer(Server):  # type: ignore[misc]
    """simple_websocket's server side, read by the session's own greenlet instead of a reader greenlet
    that hands each message over through an event: per incoming frame one greenlet switch, one event
    and one read timer less (that read path, wsproto's parsing included, was a sixth of the gateway's
    profile under load), and one greenlet less per held connection. Without an extension the client's
    frames are parsed by frames.ClientFrames (`_take`); with permessage-deflate by wsproto and
    simple_websocket (`_handle_events`), as before. Reading stops while the session handles a frame;
    the socket's buffers hold what arrives meanwhile."""

    input_buffer: list[bytes | str]  # simple_websocket's: whole messages read, not yet handled
    close_reason: int  # simple_websocket's: the close code, and its message
    close_message: str | None

    def __init__(self, environ: dict[str, Any], max_message_size: int, receive_bytes: int = RECEIVE_BYTES) -> None:
        self.read_ended = False  # end of stream, the client's close, or a protocol error: no more frames
        super().__init__(
            environ,
            receive_bytes=receive_bytes,
            max_message_size=max_message_size,
            thread_class=_NotStarted,
            event_class=_NoWaiters,
        )
        # without an extension, the client's frames are parsed here (frames.ClientFrames), not by wsproto
        self.frames = frames.ClientFrames(max_message_size) if frames_are_plain(self) else None

    def receive_messages(self) -> list[bytes | str]:
        """Wait for the next whole messages (one read may complete several); ConnectionClosed at the end."""
        while not self.input_buffer:
            if self.read_ended:
                raise ConnectionClosed(self.close_reason, self.close_message)
            sock: Any = self.sock
            try:
                data = getattr(sock, "raw", sock).recv(self.receive_bytes)
                if not data:
                    raise ConnectionResetError("end of stream")
                if self.frames is not None:
                    self._take(self.frames.feed(data))
                else:
                    self.ws.receive_data(data)
                    if not self._handle_events():  # the client's close (answered), or a message too big
                        self.read_ended = True
            except (OSError, LocalProtocolError):
                self.connected = False
                self.read_ended = True
        messages: list[bytes | str] = self.input_buffer
        self.input_buffer = []
        return messages

    def _take(self, incoming: frames.Incoming) -> None:
        """simple_websocket's `_handle_events` for frames parsed by ClientFrames."""
        self.input_buffer.extend(incoming.messages)
        if incoming.pong:
            self.pong_received = True
        answer = b"".join(frames.control_frame(frames.OP_PONG, body) for body in incoming.pings)
        if answer:
            self.sock.send(answer)
        if incoming.error is not None:
            log.info("websocket protocol error (%d): %s", incoming.error.code, incoming.error.reason)
            self._end_with(incoming.error.code, incoming.error.reason)
        elif incoming.close is not None:
            self._end_with(*incoming.close)

    def _end_with(self, code: int, reason: str) -> None:
        """Close after the client's close frame (echoed, unless we closed first) or its protocol error."""
        self.close_reason, self.close_message = code, reason
        answer = self.connected
        self.connected = False
        self.read_ended = True
        if answer:
            self.sock.send(frames.control_frame(frames.OP_CLOSE, frames.close_payload(code, reason)))

    def receive(self, timeout: float | None = None) -> bytes | str | None:
        raise NotImplementedError("an InlineServer is read with receive_messages()")


class _OpenHandshake:
    """All wsproto's WSConnection asks of its handshake once the connection is open: its events, none."""

    __slots__ = ()

    def events(self) -> tuple[()]:
        return ()


_OPEN_HANDSHAKE = _OpenHandshake()


def drop_handshake(ws: Any) -> None:
    """Once a websocket is open, wsproto keeps its HTTP handshake for good (h11's connection, its
    state, receive buffer and the parsed request: ~15 GC-tracked objects per websocket). It reads no
    more of it than its (spent) events, so it is swapped for an empty one."""
    connection = getattr(ws, "ws", None)
    if connection is not None and getattr(connection, "connection", None) is not None:
        connection.handshake = _OPEN_HANDSHAKE


def release_parser(ws: Any) -> None:
    """wsproto's frame parser is a generator holding its FrameProtocol, which holds it: a reference
    cycle that ends only when a close frame is parsed. A client that vanished without one (a phone
    losing its network) left it to the cyclic collector, and frozen (app/ops/runtime.py GcWatch) it
    would never be freed. Closed here once the session is over: a later read sees no more frames."""
    connection = getattr(getattr(ws, "ws", None), "connection", None)
    parser = getattr(getattr(connection, "_proto", None), "_parse_more", None)
    if parser is not None:
        parser.close()


def end_websocket(ws: Any) -> None:
    """After a websocket session: give the client CLOSE_GRACE_SECONDS to answer our close frame (its
    late frames are dropped), then shut the socket, so a client that never answers holds no socket."""
    if not getattr(ws, "read_ended", True):
        with gevent.Timeout(CLOSE_GRACE_SECONDS, False):  # False: the timeout ends the block silently
            try:
                while True:
                    ws.receive_messages()
            except ConnectionClosed:
                return
    shutdown_quietly(getattr(ws, "sock", None))


def shutdown_quietly(sock: Any) -> None:
    """Both directions of a socket that may already be gone: its readers see end-of-file."""
    if sock is None:
        return
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass

"""RFC 6455 frames of a websocket that negotiated no extension, without wsproto: the server's frames
(`data_frame`, `control_frame`) and the client's (`ClientFrames`).

The bench's clients and openim-sdk-core's gorilla websocket negotiate no extension; a browser offers
permessage-deflate, and its frames still go through wsproto. Parsing a client's frame with wsproto
(its frame decoder, its masker, its event objects) and simple_websocket's event loop was a tenth of
the gateway's CPU under load; here it is a header, one XOR over the payload and a list append. The
checks are wsproto's: masked client frames, no reserved bits, known opcodes, whole and short control
frames, fragments in order, UTF-8 text, a size limit per message, valid close codes.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_DATA_OPCODES = (OP_CONTINUATION, OP_TEXT, OP_BINARY)
_CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

PROTOCOL_ERROR = 1002
NO_STATUS_RCVD = 1005  # a close frame without a code (never sent on the wire)
INVALID_FRAME_PAYLOAD_DATA = 1007
MESSAGE_TOO_BIG = 1009
MAX_CONTROL_PAYLOAD = 125


def data_frame(payload: bytes | str) -> bytes:
    """One whole, unmasked server-to-client data frame (RFC 6455 5.2): binary for bytes, text for
    str. What wsproto writes for a message when no extension was negotiated, without its copies of
    the payload and its per-frame checks (a push or an answer is written several times a message)."""
    if isinstance(payload, str):
        return _frame(OP_TEXT, payload.encode("utf-8"))
    return _frame(OP_BINARY, payload)


def control_frame(opcode: int, payload: bytes = b"") -> bytes:
    """A server's close, ping or pong frame (payload at most 125 bytes)."""
    return _frame(opcode, payload[:MAX_CONTROL_PAYLOAD])


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame's body: the code and its reason, cut to fit a control frame; none for 1005."""
    if code == NO_STATUS_RCVD:
        return b""
    body = struct.pack("!H", code) + reason.encode("utf-8")
    return body[:MAX_CONTROL_PAYLOAD]


def _frame(opcode: int, body: bytes) -> bytes:
    first = 0x80 | opcode  # FIN
    size = len(body)
    if size < 126:
        head = bytes((first, size))
    elif size < 1 << 16:
        head = struct.pack("!BBH", first, 126, size)
    else:
        head = struct.pack("!BBQ", first, 127, size)
    return head + body


def unmask(payload: bytes | bytearray, mask: bytes | bytearray) -> bytes:
    """XOR with the 4-byte mask repeated (RFC 6455 5.3), as one big-integer operation."""
    size = len(payload)
    if not size:
        return b""
    key = (bytes(mask) * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def valid_close_code(code: int) -> bool:
    """Codes a peer may send (RFC 6455 7.4): the defined ones except those reserved for local use,
    and the registered / private ranges."""
    return code in (1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014) or 3000 <= code <= 4999


class FrameError(Exception):
    """The client broke the protocol: the connection is closed with this code."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass
class Incoming:
    """What one read of the socket brought: whole messages, and the control frames among them."""

    messages: list[bytes | str] = field(default_factory=list)
    pings: list[bytes] = field(default_factory=list)
    pong: bool = False
    close: tuple[int, str] | None = None  # the client's close (code, reason): nothing after it is read
    error: FrameError | None = None  # the client broke the protocol: nothing after it is read


class ClientFrames:
    """A client's frames (masked, RFC 6455 5.1) parsed from the bytes as they arrive, and its
    fragmented messages reassembled. A protocol error, or a message over `max_message` bytes (1009,
    seen from its header, before its payload is buffered), is the `error` of what was read: the
    messages before it are kept."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buffer = bytearray()
        self._opcode = 0  # the fragmented message being reassembled (0: none)
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, data: bytes) -> Incoming:
        incoming = Incoming()
        try:
            self._parse(data, incoming)
        except FrameError as exc:
            incoming.error = exc
        return incoming

    def _parse(self, data: bytes, incoming: Incoming) -> None:
        buffer = self._buffer
        buffer += data
        end = len(buffer)
        pos = 0
        while end - pos >= 2:
            first, second = buffer[pos], buffer[pos + 1]
            opcode, length, head = first & 0x0F, second & 0x7F, 2
            if length == 126:
                if end - pos < 4:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 4], "big"), 4
            elif length == 127:
                if end - pos < 10:
                    break
                length, head = int.from_bytes(buffer[pos + 2 : pos + 10], "big"), 10
            self._check_header(first, second, opcode, length)
            start = pos + head + 4
            if end < start + length:
                break
            payload = unmask(buffer[start : start + length], buffer[pos + head : start])
            pos = start + length
            if opcode >= OP_CLOSE:
                if opcode == OP_PING:
                    incoming.pings.append(payload)
                elif opcode == OP_PONG:
                    incoming.pong = True
                else:
                    incoming.close = _parse_close(payload)
                    break  # nothing after a close frame is read
                continue
            message = self._data(opcode, bool(first & 0x80), payload)
            if message is not None:
                incoming.messages.append(message)
        del buffer[:pos]

    def _check_header(self, first: int, second: int, opcode: int, length: int) -> None:
        if first & 0x70:
            raise FrameError(PROTOCOL_ERROR, "reserved bits set without an extension")
        if not second & 0x80:
            raise FrameError(PROTOCOL_ERROR, "a client's frames must be masked")
        if opcode in _CONTROL_OPCODES:
            if not first & 0x80:
                raise FrameError(PROTOCOL_ERROR, "a fragmented control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise FrameError(PROTOCOL_ERROR, "a control frame over 125 bytes")
            return
        if opcode not in _DATA_OPCODES:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode:#x}")
        if opcode == OP_CONTINUATION and not self._opcode:
            raise FrameError(PROTOCOL_ERROR, "a continuation frame outside a fragmented message")
        if opcode != OP_CONTINUATION and self._opcode:
            raise FrameError(PROTOCOL_ERROR, "a new message inside a fragmented one")
        if self._size + length > self.max_message:
            raise FrameError(MESSAGE_TOO_BIG, "message is too big")

    def _data(self, opcode: int, fin: bool, payload: bytes) -> bytes | str | None:
        if opcode != OP_CONTINUATION:
            if fin:
                return _message(opcode, payload)
            self._opcode, self._parts, self._size = opcode, [payload], len(payload)
            return None
        self._parts.append(payload)
        self._size += len(payload)
        if not fin:
            return None
        opcode, whole = self._opcode, b"".join(self._parts)
        self._opcode, self._parts, self._size = 0, [], 0
        return _message(opcode, whole)


def _message(opcode: int, payload: bytes) -> bytes | str:
    if opcode == OP_BINARY:
        return payload
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(INVALID_FRAME_PAYLOAD_DATA, "text message is not UTF-8") from None


def _parse_close(payload: bytes) -> tuple[int, str]:
    if not payload:
        return NO_STATUS_RCVD, ""
    if len(payload) == 1:
        raise FrameError(PROTOCOL_ERROR, "a close frame with a one-byte body")
    code = int.from_bytes(payload[:2], "big")
    if not valid_close_code(code):
        raise FrameError(PROTOCOL_ERROR, f"invalid close code {code}")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(INVALID_FRAME_PAYLOAD_DATA, "close reason is not UTF-8") from None

"""Frames without wsproto (app/ws/frames.py): the server's read back by wsproto's own client-side
parser exactly as the frames it writes itself, at every length encoding; a client's (written by
wsproto's client side) parsed by ClientFrames in any chunking, and its protocol errors refused with
the close codes wsproto gives them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Event, Ping, Pong, TextMessage
from wsproto.frame_protocol import FrameProtocol, Opcode

from app.ws.frames import (
    INVALID_FRAME_PAYLOAD_DATA,
    MESSAGE_TOO_BIG,
    NO_STATUS_RCVD,
    OP_CLOSE,
    OP_PONG,
    PROTOCOL_ERROR,
    ClientFrames,
    FrameError,
    close_payload,
    control_frame,
    data_frame,
    unmask,
)

LENGTHS = [0, 1, 125, 126, 127, 65_535, 65_536, 70_000]


def _read_as_client(raw: bytes) -> list[tuple[Opcode, object, bool]]:
    parser = FrameProtocol(client=True, extensions=[])
    parser.receive_bytes(raw)
    return [(frame.opcode, frame.payload, frame.frame_finished) for frame in parser.received_frames()]


def _written_by_wsproto(event: Event) -> bytes:
    return Connection(ConnectionType.SERVER).send(event)


@pytest.mark.parametrize("size", LENGTHS)
def test_binary_frames_are_wsprotos_own(size: int) -> None:
    payload = bytes(i % 251 for i in range(size))
    frame = data_frame(payload)
    assert frame == _written_by_wsproto(BytesMessage(data=payload))
    assert _read_as_client(frame) == [(Opcode.BINARY, payload, True)]


@pytest.mark.parametrize("size", LENGTHS)
def test_text_frames_are_wsprotos_own(size: int) -> None:
    text = ("é" * size)[:size]  # two bytes each in UTF-8: the length field counts bytes
    frame = data_frame(text)
    assert frame == _written_by_wsproto(TextMessage(data=text))
    assert _read_as_client(frame) == [(Opcode.TEXT, text, True)]


@settings(deadline=None, max_examples=200)
@given(st.lists(st.one_of(st.binary(max_size=300), st.text(max_size=200)), min_size=1, max_size=8))
def test_frames_written_together_read_back_one_by_one(payloads: list[bytes | str]) -> None:
    raw = b"".join(data_frame(p) for p in payloads)
    read = _read_as_client(raw)
    assert [payload for _, payload, _ in read] == payloads
    assert [op for op, _, _ in read] == [Opcode.TEXT if isinstance(p, str) else Opcode.BINARY for p in payloads]


# --- a client's frames, parsed without wsproto (ClientFrames) ----------------------------------


def _client_bytes(*events: Event) -> bytes:
    """What a websocket client (wsproto, client side: masked) writes for these events."""
    conn = Connection(ConnectionType.CLIENT)
    return b"".join(conn.send(e) for e in events)


def _masked(first: int, payload: bytes, mask: bytes = b"\x01\x02\x03\x04") -> bytes:
    """One hand-made client frame: `first` is FIN/RSV/opcode, the payload masked with `mask`."""
    size = len(payload)
    if size < 126:
        head = bytes((first, 0x80 | size))
    elif size < 1 << 16:
        head = bytes((first, 0x80 | 126)) + size.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + size.to_bytes(8, "big")
    return head + mask + unmask(payload, mask)


def _parts(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@pytest.mark.parametrize("size", LENGTHS)
def test_unmask_is_the_xor_with_the_repeated_mask(size: int) -> None:
    payload, mask = bytes(i % 253 for i in range(size)), b"\x9a\x00\xff\x17"
    assert unmask(payload, mask) == bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert unmask(unmask(payload, mask), mask) == payload


@settings(deadline=None, max_examples=300)
@given(
    st.lists(st.one_of(st.binary(max_size=400), st.text(max_size=200)), min_size=1, max_size=6),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=12),
    st.integers(min_value=1, max_value=4),
)
def test_messages_in_any_chunking_and_fragmenting_come_back_whole(
    payloads: list[bytes | str], cuts: list[int], pieces: int
) -> None:
    events: list[Event] = []
    for p in payloads:  # each message in `pieces` fragments
        step = max(1, len(p) // pieces)
        chunks = [p[i : i + step] for i in range(0, len(p), step)] or [p]
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            kind = TextMessage if isinstance(p, str) else BytesMessage
            events.append(kind(data=chunk, message_finished=last))  # type: ignore[arg-type]
    data = _client_bytes(*events)
    parser = ClientFrames(max_message=1 << 20)
    got: list[bytes | str] = []
    for part in _parts(data, cuts):
        got += parser.feed(part).messages
    assert got == payloads


def test_control_frames_between_fragments_are_seen_and_the_close_ends_reading() -> None:
    data = _client_bytes(
        BytesMessage(data=b"one-", message_finished=False),
        Ping(payload=b"p1"),
        BytesMessage(data=b"two", message_finished=True),
        Pong(payload=b""),
        CloseConnection(code=4000, reason="bye"),
    ) + _masked(0x82, b"after the close")
    incoming = ClientFrames(1000).feed(data)
    assert incoming.messages == [b"one-two"]
    assert incoming.pings == [b"p1"] and incoming.pong
    assert incoming.close == (4000, "bye")


def test_a_close_without_a_code_is_1005() -> None:
    assert ClientFrames(1000).feed(_masked(0x88, b"")).close == (NO_STATUS_RCVD, "")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"\x82\x03abc", PROTOCOL_ERROR),  # not masked
        (_masked(0xC2, b"x"), PROTOCOL_ERROR),  # RSV1 without permessage-deflate
        (_masked(0x83, b"x"), PROTOCOL_ERROR),  # opcode 3 is reserved
        (_masked(0x8B, b""), PROTOCOL_ERROR),  # opcode 0xB is reserved
        (_masked(0x09, b"ping"), PROTOCOL_ERROR),  # a fragmented ping
        (_masked(0x89, b"p" * 126), PROTOCOL_ERROR),  # a control frame over 125 bytes
        (_masked(0x80, b"cont"), PROTOCOL_ERROR),  # a continuation with no message begun
        (_masked(0x02, b"a") + _masked(0x82, b"b"), PROTOCOL_ERROR),  # a new message inside a fragmented one
        (_masked(0x81, b"\xff\xfe"), INVALID_FRAME_PAYLOAD_DATA),  # text that is not UTF-8
        (_masked(0x01, b"\xc3") + _masked(0x80, b"("), INVALID_FRAME_PAYLOAD_DATA),  # split, still not UTF-8
        (_masked(0x88, b"\x03"), PROTOCOL_ERROR),  # a one-byte close body
        (_masked(0x88, (1005).to_bytes(2, "big")), PROTOCOL_ERROR),  # a code never sent on the wire
        (_masked(0x88, (999).to_bytes(2, "big")), PROTOCOL_ERROR),
        (_masked(0x88, (1000).to_bytes(2, "big") + b"\xff"), INVALID_FRAME_PAYLOAD_DATA),
        (_masked(0x82, b"x" * 101), MESSAGE_TOO_BIG),
        (_masked(0x02, b"x" * 60) + _masked(0x80, b"x" * 41), MESSAGE_TOO_BIG),
    ],
)
def test_protocol_errors_carry_wsprotos_close_codes(raw: bytes, code: int) -> None:
    before = _masked(0x82, b"kept")  # a message before the error in the same read is not lost
    incoming = ClientFrames(max_message=100).feed(before + raw + _masked(0x82, b"not read"))
    assert isinstance(incoming.error, FrameError) and incoming.error.code == code
    assert incoming.messages == [b"kept"]


def test_a_message_over_the_limit_is_refused_from_its_header_alone() -> None:
    header_only = _masked(0x82, b"x" * 70_000)[:14]  # 2 + 8 length + 4 mask bytes, no payload yet
    error = ClientFrames(max_message=65_536).feed(header_only).error
    assert error is not None and error.code == MESSAGE_TOO_BIG


@pytest.mark.parametrize("code", [1000, 1001, 1011, 3000, 4999])
def test_valid_close_codes_are_kept_and_the_answer_echoes_them(code: int) -> None:
    assert ClientFrames(10).feed(_masked(0x88, code.to_bytes(2, "big") + b"why")).close == (code, "why")
    answer = control_frame(OP_CLOSE, close_payload(code, "why"))
    assert _read_as_client(answer) == [(Opcode.CLOSE, (code, "why"), True)]


def test_a_pong_is_wsprotos_own() -> None:
    assert control_frame(OP_PONG, b"body") == _written_by_wsproto(Pong(payload=b"body"))

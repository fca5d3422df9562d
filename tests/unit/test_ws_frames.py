"""Server frames written without wsproto (app/ws/sockets.py data_frame) read back by wsproto's own
client-side parser exactly as the frames it writes itself, at every length encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, Event, TextMessage
from wsproto.frame_protocol import FrameProtocol, Opcode

from app.ws.sockets import data_frame

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

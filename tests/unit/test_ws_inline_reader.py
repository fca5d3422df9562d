"""The gateway's websocket read by its session (InlineServer): frames written by wsproto's client side
over a real socket pair, read back with receive_messages, and the server's answers parsed by wsproto."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator

import pytest
from simple_websocket import ConnectionClosed
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Event, Message, Ping, Pong, Request
from wsproto.extensions import PerMessageDeflate

from app.ws.sockets import InlineServer


class Peer:
    """A websocket client (wsproto) on one end of a socket pair; the InlineServer on the other."""

    def __init__(self, max_message_size: int = 1 << 20, receive_bytes: int = 16384, deflate: bool = False) -> None:
        self.sock, server_sock = socket.socketpair()
        server_sock.settimeout(5)  # a read that would wait forever fails the test instead (an OSError: the end)
        self.client = WSConnection(ConnectionType.CLIENT)
        offer = [PerMessageDeflate()] if deflate else []
        request = self.client.send(Request(host="gateway", target="/", extensions=offer)).decode()
        headers = dict(re.findall(r"^([^:\r\n]+): ([^\r\n]*)", request, re.M))
        environ = {
            "werkzeug.socket": server_sock,
            "HTTP_HOST": "gateway",
            "HTTP_CONNECTION": "Upgrade",
            "HTTP_UPGRADE": "websocket",
            "HTTP_SEC_WEBSOCKET_KEY": headers["Sec-WebSocket-Key"],
            "HTTP_SEC_WEBSOCKET_VERSION": "13",
        }
        if deflate:
            environ["HTTP_SEC_WEBSOCKET_EXTENSIONS"] = headers["Sec-WebSocket-Extensions"]
        self.server = InlineServer(environ, max_message_size=max_message_size, receive_bytes=receive_bytes)
        assert any(isinstance(e, AcceptConnection) for e in self.events())
        # without an extension our own parser reads the frames; with permessage-deflate, wsproto
        assert (self.server.frames is None) == deflate

    def write(self, *events: Event) -> None:
        self.sock.sendall(b"".join(self.client.send(e) for e in events))

    def events(self) -> Iterator[Event]:
        self.sock.settimeout(2)
        self.client.receive_data(self.sock.recv(65536))
        return iter(list(self.client.events()))

    def close(self) -> None:
        self.sock.close()
        self.server.sock.close()


@pytest.fixture(params=[False, True], ids=["plain", "deflate"])
def deflate(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def peer(deflate: bool) -> Iterator[Peer]:
    p = Peer(deflate=deflate)
    yield p
    p.close()


def test_messages_written_together_come_back_together_in_order(peer: Peer) -> None:
    peer.write(Message(data=b"one"), Message(data="two"), Message(data=b"\x00three"))
    assert peer.server.receive_messages() == [b"one", "two", b"\x00three"]
    peer.write(Message(data=b"four"))
    assert peer.server.receive_messages() == [b"four"]


def test_a_message_split_over_many_reads_and_fragments_is_whole(deflate: bool) -> None:
    peer = Peer(receive_bytes=5, deflate=deflate)  # every frame takes several reads
    try:
        peer.write(
            Message(data=b"abc" * 30, message_finished=False),
            Message(data=b"def" * 30, message_finished=True),
            Message(data="é" * 40),
        )
        got: list[bytes | str] = []
        while len(got) < 2:
            got += peer.server.receive_messages()
        assert got == [b"abc" * 30 + b"def" * 30, "é" * 40]
    finally:
        peer.close()


def test_a_ping_is_answered_and_a_pong_is_noted_without_a_message(peer: Peer) -> None:
    peer.server.pong_received = False
    peer.write(Ping(payload=b"are you there"), Pong(payload=b""), Message(data=b"after"))
    assert peer.server.receive_messages() == [b"after"]
    assert peer.server.pong_received
    assert [(type(e), getattr(e, "payload", None)) for e in peer.events()] == [(Pong, b"are you there")]


def test_the_clients_close_is_answered_and_ends_the_reading(peer: Peer) -> None:
    peer.write(Message(data=b"last"), CloseConnection(code=1000, reason="bye"))
    assert peer.server.receive_messages() == [b"last"]
    with pytest.raises(ConnectionClosed) as closed:
        peer.server.receive_messages()
    assert closed.value.reason == 1000
    assert peer.server.read_ended and not peer.server.connected
    assert [type(e) for e in peer.events()] == [CloseConnection]


def test_a_message_over_the_limit_is_refused_with_1009(deflate: bool) -> None:
    peer = Peer(max_message_size=100, deflate=deflate)
    try:
        peer.write(Message(data=bytes(range(101))))
        with pytest.raises(ConnectionClosed):
            peer.server.receive_messages()
        [close] = list(peer.events())
        assert isinstance(close, CloseConnection) and close.code == 1009
    finally:
        peer.close()


def test_an_unmasked_frame_is_refused_with_1002(peer: Peer) -> None:
    peer.sock.sendall(b"\x82\x03abc")  # a client's frame must be masked (RFC 6455 5.1)
    with pytest.raises(ConnectionClosed):
        peer.server.receive_messages()
    [close] = list(peer.events())
    assert isinstance(close, CloseConnection) and close.code == 1002


def test_end_of_stream_ends_the_reading(peer: Peer) -> None:
    peer.write(Message(data=b"before"))
    peer.sock.shutdown(socket.SHUT_WR)
    assert peer.server.receive_messages() == [b"before"]
    with pytest.raises(ConnectionClosed):
        peer.server.receive_messages()
    assert peer.server.read_ended
    with pytest.raises(ConnectionClosed):  # and stays ended
        peer.server.receive_messages()

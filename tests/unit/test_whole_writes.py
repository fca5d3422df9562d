"""WholeWrites.send_now: a frame written by its producer, never waiting, never interleaved with another
write (app/ws/sockets.py). Real sockets (a gevent socketpair), gevent's own scheduling."""

from __future__ import annotations

import socket

import gevent
import gevent.socket

from app.ws.sockets import WholeWrites


def pair() -> tuple[WholeWrites, gevent.socket.socket]:
    ours, theirs = gevent.socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    theirs.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return WholeWrites(ours), theirs


def read_exactly(sock: gevent.socket.socket, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        assert chunk, "closed early"
        out += chunk
    return bytes(out)


def test_a_frame_the_socket_takes_goes_out_at_once() -> None:
    ours, theirs = pair()
    assert ours.send_now(b"hello")
    assert not ours._writing.locked()
    assert read_exactly(theirs, 5) == b"hello"


def test_a_partial_write_is_finished_before_any_later_write() -> None:
    ours, theirs = pair()
    big = bytes(range(256)) * 2048  # 512 KiB: far more than both buffers hold
    assert ours.send_now(big)  # part written now, the rest by a greenlet holding the lock
    assert ours._writing.locked()
    assert not ours.send_now(b"later")  # never written while the rest waits, nor before it
    writer = gevent.spawn(ours.send, b"after")  # the writer greenlet's way: waits for the lock
    got = read_exactly(theirs, len(big) + 5)
    writer.join(timeout=5)
    assert got == big + b"after"
    assert not ours._writing.locked()


def test_frames_written_now_or_queued_arrive_whole_and_in_order() -> None:
    """As a connection writes: at once while nothing is queued and the lock is free, else queued for a
    writer greenlet; the peer reads slowly, so the socket fills, refuses, and takes parts of frames."""
    from gevent.queue import Queue

    ours, theirs = pair()
    frames = [f"<{i}:{'x' * (i * 37 % 3000)}>".encode() for i in range(400)]
    queued: Queue[bytes] = Queue()
    busy = [False]

    def writer() -> None:
        while True:
            frame = queued.get()
            busy[0] = True
            ours.send(frame)
            busy[0] = False

    gevent.spawn(writer)
    now = 0
    for frame in frames:
        if not busy[0] and not queued.qsize() and ours.send_now(frame):
            now += 1
        else:
            queued.put(frame)
        gevent.sleep(0)
    expected = b"".join(frames)
    got = bytearray()
    while len(got) < len(expected):
        got += theirs.recv(1000)
        gevent.sleep(0)
    assert bytes(got) == expected
    assert 0 < now < len(frames)  # both ways were taken


def test_a_gone_peer_is_left_to_the_writer() -> None:
    ours, theirs = pair()
    theirs.close()
    gevent.sleep(0)
    results = [ours.send_now(b"z" * 100) for _ in range(3)]
    assert results[-1] is False  # the socket errors: nothing claimed written, the lock free again
    assert not ours._writing.locked()

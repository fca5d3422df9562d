"""Ports for servers about to start: free, and never one an outgoing connection can take first."""

from __future__ import annotations

import socket

from app.ops import embedded


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound() -> None:
    low, high = embedded.ephemeral_ports()
    assert 0 < low <= high
    ports = {embedded.free_port() for _ in range(20)}
    assert len(ports) > 1  # chosen at random, not the same one each time
    for port in ports:
        assert port < low
        assert embedded.bindable(port)


def test_a_port_in_use_is_not_bindable() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert not embedded.bindable(server.getsockname()[1])

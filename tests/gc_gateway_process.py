"""The gateway's own WSGI application and server (app.gateway, under gevent) in this one process,
with N raw websocket clients connecting to it: what a held connection costs the cyclic garbage
collector, and what closing it leaves for that collector.

Run as `python -m tests.gc_gateway_process N` from the project root with REDIS_URL and TOKEN_SECRET in
the environment (the tests' conftest sets both). Automatic collections are off for the whole run.
Prints one JSON line: tracked_per_connection (GC-tracked objects added per held connection, the few
of each raw client socket included), garbage_after_close (objects in reference cycles that the
closed connections left, found by one full collection: reference counting frees the rest at once),
then, with the gateway's freezing of young collections' survivors (GC_FREEZE_SURVIVORS), the objects
frozen per held connection and those still frozen per connection once they closed.
"""

from __future__ import annotations

from gevent import monkey

monkey.patch_all()

import base64  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import struct  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402

from app.gateway import Gateway, create_app  # noqa: E402
from app.ops import logs  # noqa: E402
from app.ops.runtime import untrack_greenlet_tree, watch_gc  # noqa: E402
from app.services.auth import mint_token  # noqa: E402
from app.ws.acceptance import Pending  # noqa: E402
from app.ws.batcher import ShardBatcher  # noqa: E402
from app.ws.publish import accept_shard_batches  # noqa: E402
from app.ws.sockets import GuardedServer, SocketGuard  # noqa: E402

PLATFORM = 5  # web


def open_client(port: int, user: str, token: str) -> socket.socket:
    """A websocket as a client writes it by hand: the upgrade, then the gateway's connection answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    query = f"sendID={user}&platformID={PLATFORM}&token={token}&sdkType=js&isMsgResp=true&operationID=gc"
    sock.sendall(
        (
            f"GET /?{query} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    received = b""
    while b'"errCode":0' not in received.replace(b" ", b""):  # the 101, then the login's text frame
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"{user}: closed before its login was answered: {received[:300]!r}")
        received += chunk
    return sock


def close_frame() -> bytes:
    """A masked close frame with status 1000 (a client's frames are masked)."""
    mask = os.urandom(4)
    payload = struct.pack("!H", 1000)
    return bytes([0x88, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        gevent.sleep(0.05)


def main(argv: list[str]) -> int:
    count = int(argv[0])
    untrack_greenlet_tree()  # as `python -m app gateway` does, and its logging (records at INFO)
    logs.setup("INFO", "json")
    gc.disable()
    batcher: ShardBatcher[Pending] = ShardBatcher(accept_shard_batches, 0.002, 100, 0.02)
    gateway = Gateway(f"gc-node-{os.getpid()}", batcher)
    guard: Any = SocketGuard(count + 100, 100, 10.0)
    gateway.sockets = guard
    server = GuardedServer(("127.0.0.1", 0), create_app(gateway), guard, log=None, error_log=None)
    server.start()
    port = server.server_port
    prefix = f"gc{os.getpid()}x"

    # minted first: minting leaves a little cyclic garbage of its own (importlib.metadata) in this process
    tokens = {f"{prefix}{tag}{i}": "" for tag, n in (("w", count), ("c", count), ("f", count)) for i in range(n)}
    for user in tokens:
        tokens[user] = mint_token(user, PLATFORM)

    def run(n: int, tag: str, while_held: Callable[[], None] | None = None) -> int:
        """Open n connections, count what they hold, close them (half with a close frame, half by
        dropping the TCP connection), and wait until the gateway has ended every session."""
        clients = [open_client(port, f"{prefix}{tag}{i}", tokens[f"{prefix}{tag}{i}"]) for i in range(n)]
        wait_for(lambda: gateway.hub.connection_count() == n, "every login registered")
        gevent.sleep(0.2)
        gc.collect()
        held = len(gc.get_objects())
        if while_held is not None:
            while_held()
        for i, client in enumerate(clients):
            if i % 2 == 0:
                client.sendall(close_frame())
            else:
                client.close()
        wait_for(lambda: gateway.hub.connection_count() == 0, "every session removed from the hub")
        wait_for(lambda: guard.open == 0, "every server socket released")
        for client in clients:
            client.close()
        del clients
        gevent.sleep(0.5)  # the handlers' last steps after their sockets are released
        return held

    run(count, "w")  # warm-up: imports, caches, the Redis pool grown to what `count` logins take
    gc.collect()
    before = len(gc.get_objects())
    held = run(count, "c")
    garbage = gc.collect()
    # The gateway's policy: what survives a young collection is frozen (never scanned again). Frozen,
    # the connections' objects must still be freed by reference counting once they close.
    watch_gc(freeze_survivors=True)
    gc.freeze()  # as the gateway at start (tune_gc): the full collection's survivors too
    frozen_before = gc.get_freeze_count()
    clients_frozen: list[int] = []

    def young_collection_then_count() -> None:
        gc.collect(0)  # as the gateway's next automatic one: its survivors are frozen
        clients_frozen.append(gc.get_freeze_count())

    run(count, "f", while_held=young_collection_then_count)
    frozen_after = gc.get_freeze_count()
    print(
        json.dumps(
            {
                "tracked_per_connection": (held - before) / count,
                "garbage_after_close": garbage,
                "frozen_per_connection": (clients_frozen[0] - frozen_before) / count,
                "frozen_left_per_connection": (frozen_after - frozen_before) / count,
                "count": count,
            }
        ),
        flush=True,
    )
    server.stop(timeout=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

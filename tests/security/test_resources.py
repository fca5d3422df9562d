"""Resources before and around authentication (issue 14, item 7), against real gateway processes.

Sockets that never finish their HTTP request are closed after GATEWAY_HANDSHAKE_TIMEOUT and, past
GATEWAY_MAX_PENDING_SOCKETS, the oldest of them makes room for a new one; every socket counts
towards GATEWAY_MAX_SOCKETS. A client that stops reading is dropped past GATEWAY_OUTBOX_MAX_BYTES
and goes offline (its messages then go to offline push). A client's close is answered at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests
import websocket
from websockets.asyncio.client import connect as async_connect

from app.cli.client import ImClient, connect_url
from app.core.constants import LINUX
from app.ops import embedded
from app.services.auth import mint_token
from app.store.redis import online
from app.ws.sockets import LISTEN_BACKLOG
from tests.fake_providers import FakeProvider
from tests.integration.helpers import eventually
from tests.stack import ROOT, GatewayNode

HANDSHAKE_SECONDS = 2.0
MAX_PENDING = 4
OUTBOX_MAX_BYTES = 256 * 1024


@pytest.fixture(scope="module")
def guarded(gateways: Callable[..., GatewayNode]) -> GatewayNode:
    """A gateway with a short handshake timeout, few pending sockets and a small outbox budget."""
    return gateways(
        "gw-guarded",
        env={
            "GATEWAY_HANDSHAKE_TIMEOUT": str(HANDSHAKE_SECONDS),
            "GATEWAY_MAX_PENDING_SOCKETS": str(MAX_PENDING),
            "GATEWAY_OUTBOX_MAX_BYTES": str(OUTBOX_MAX_BYTES),
        },
    )


@pytest.fixture(scope="module")
def capped(gateways: Callable[..., GatewayNode]) -> GatewayNode:
    """A gateway that holds at most 8 sockets, with a handshake timeout longer than the test."""
    return gateways("gw-capped", env={"GATEWAY_MAX_SOCKETS": "8", "GATEWAY_HANDSHAKE_TIMEOUT": "60"})


@pytest.fixture
def raw_sockets() -> Iterator[list[socket.socket]]:
    opened: list[socket.socket] = []
    yield opened
    for sock in opened:
        sock.close()


def _open(port: int, opened: list[socket.socket], first_bytes: bytes = b"") -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    opened.append(sock)
    if first_bytes:
        sock.sendall(first_bytes)
    return sock


def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the peer closed the socket (EOF or reset), or None if it was still open."""
    start = time.monotonic()
    sock.settimeout(seconds)
    try:
        while True:
            if not sock.recv(65536):
                return time.monotonic() - start
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic() - start
    except TimeoutError:
        return None


def _client(node: GatewayNode, user_id: str) -> ImClient:
    return ImClient(node.ws_url, user_id, LINUX, mint_token(user_id, LINUX))


def _healthz(node: GatewayNode) -> dict[str, Any]:
    answer: dict[str, Any] = requests.get(f"{node.http_url}/healthz", timeout=5).json()
    return answer


def _healthz_ok(node: GatewayNode) -> bool:
    try:
        return _healthz(node).get("status") == "ok"
    except (requests.RequestException, ValueError):
        return False


def _online_platforms(user_id: str) -> list[int]:
    return [e.platform_id for e in online.get_online([user_id]).get(user_id, [])]


# --- sockets before the upgrade --------------------------------------------------------------


def test_sockets_that_never_finish_their_request_are_closed(
    guarded: GatewayNode, raw_sockets: list[socket.socket], uid: str
) -> None:
    client = _client(guarded, f"idle{uid}")  # upgraded: the handshake deadline must not touch it
    try:
        silent = _open(guarded.port, raw_sockets)
        half_line = _open(guarded.port, raw_sockets, b"GET /?sendID=x&platformID=7 HTT")
        for sock in (silent, half_line):
            took = _closed_within(sock, HANDSHAKE_SECONDS + 3)
            assert took is not None and took < HANDSHAKE_SECONDS + 1.5, f"still open after {HANDSHAKE_SECONDS + 3}s"
        time.sleep(1)  # the client has now been idle for longer than the handshake timeout
        assert not client.closed.is_set()
        assert isinstance(client.newest_seqs(), dict)
        assert _online_platforms(f"idle{uid}") == [LINUX]
    finally:
        client.close()


def test_a_request_trickled_byte_by_byte_is_closed_at_the_deadline(
    guarded: GatewayNode, raw_sockets: list[socket.socket]
) -> None:
    """The deadline is for the whole request, not per read: a byte every 0.3 s does not extend it."""
    sock = _open(guarded.port, raw_sockets, b"GET /healthz HTTP/1.1\r\n")
    start = time.monotonic()
    closed_after: float | None = None
    for byte in b"X-Slow: " + b"a" * 100:
        time.sleep(0.3)
        try:
            sock.sendall(bytes([byte]))
        except OSError:
            closed_after = time.monotonic() - start
            break
        sock.settimeout(0.001)
        try:
            if not sock.recv(1):
                closed_after = time.monotonic() - start
                break
        except TimeoutError:
            pass
        except OSError:
            closed_after = time.monotonic() - start
            break
    assert closed_after is not None and closed_after < HANDSHAKE_SECONDS + 1.5, closed_after


def test_the_oldest_pending_socket_makes_room_for_a_new_one(
    guarded: GatewayNode, raw_sockets: list[socket.socket]
) -> None:
    """Idle sockets fill the pending budget: the next connection is still served, the oldest idle one
    is closed at once (long before its handshake timeout)."""
    idle = [_open(guarded.port, raw_sockets) for _ in range(MAX_PENDING)]
    time.sleep(0.3)  # accepted and counted
    started = time.monotonic()
    assert _healthz(guarded)["status"] == "ok"
    took = _closed_within(idle[0], 1.0)
    assert took is not None and time.monotonic() - started < 1.0, "the oldest pending socket was not evicted"


def test_sockets_beyond_the_cap_are_refused_and_the_rest_keep_working(
    capped: GatewayNode, raw_sockets: list[socket.socket], uid: str
) -> None:
    client = _client(capped, f"cap{uid}")
    try:
        for _ in range(7):
            _open(capped.port, raw_sockets)  # silent: they never finish a request
        time.sleep(0.3)
        extra = _open(capped.port, raw_sockets, b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        extra.settimeout(3)
        started = time.monotonic()
        answer = b""
        try:
            while chunk := extra.recv(65536):
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        assert time.monotonic() - started < 1.0, "the socket beyond the cap was held"
        assert b" 200 " not in answer.split(b"\r\n", 1)[0], answer[:200]
        assert isinstance(client.newest_seqs(), dict)  # the connection already in keeps working
        for sock in raw_sockets:
            sock.close()
        assert eventually(lambda: _healthz_ok(capped), timeout=5), "the node did not take sockets again"
    finally:
        client.close()


# --- clients that stop reading ---------------------------------------------------------------


def test_a_client_that_stops_reading_is_dropped_and_goes_offline(
    guarded: GatewayNode, stack: Any, provider: FakeProvider, uid: str
) -> None:
    victim, sender, bystander = f"slow{uid}", f"fast{uid}", f"near{uid}"
    # a websocket that never reads, with a small receive buffer so little hides in the kernel
    sock = websocket.create_connection(
        connect_url(guarded.ws_url, victim, LINUX, mint_token(victim, LINUX)),
        timeout=10,
        sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
    )
    near = _client(guarded, bystander)
    fast = ImClient(stack.ws_url, sender, LINUX, mint_token(sender, LINUX))
    try:
        assert eventually(lambda: _online_platforms(victim) == [LINUX], timeout=5)
        big = "x" * 30_000
        for i in range(300):  # at most ~12 MB of pushes; far fewer once the budget trips
            fast.send_text(victim, f"{i} {big}")
            if i % 10 == 9 and not _online_platforms(victim):
                break
        assert eventually(lambda: not _online_platforms(victim), timeout=10), "the slow reader still counts as online"
        later = {fast.send_text(victim, f"after {i}")["clientMsgID"] for i in range(3)}

        def offline_ids() -> set[str]:
            return {m["clientMsgID"] for post in provider.for_user(victim) for m in post["msgs"]}

        assert eventually(lambda: later <= offline_ids(), timeout=30), "later messages did not go to offline push"
        # the node's push path is not stalled by the dropped socket
        fast.send_text(bystander, f"hello-{uid}")
        push = near.pushes.get(timeout=15)
        assert push is not None
        log = stack.log_text("gw-guarded")
        assert sum(1 for line in log.splitlines() if victim in line and "outbox" in line) == 1, log[-3000:]
    finally:
        sock.close()
        near.close()
        fast.close()


# --- file descriptors ------------------------------------------------------------------------


def _socket_links(pid: int) -> list[str]:
    """What each of a process's socket descriptors points at: `socket:[inode]`."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(FileNotFoundError):
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return [link for link in links if link.startswith("socket:")]


def _established_on(pid: int, port: int) -> int:
    conns = psutil.Process(pid).net_connections("tcp")
    return sum(1 for c in conns if c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads descriptors in /proc")
def test_a_websocket_costs_the_gateway_one_file_descriptor_and_gives_it_back(stack: Any, uid: str) -> None:
    """simple_websocket dups the socket it takes from pywsgi: two descriptors per websocket made
    10,000 websockets meet a 20,000 limit (EMFILE, ~1% of a connection storm refused)."""
    pid, port, count = stack.procs["gateway"].pid, stack.gateway_port, 40
    before = _established_on(pid, port)
    clients = [_client(stack, f"fd{i}{uid}") for i in range(count)]
    try:
        assert all(isinstance(c.newest_seqs(), dict) for c in clients)  # every session works
        links = _socket_links(pid)
        held_twice = len(links) - len(set(links))
        assert held_twice == 0, f"{held_twice} sockets held by two descriptors each"
        assert _established_on(pid, port) == before + count
    finally:
        for client in clients:
            client.close()
    assert eventually(lambda: _established_on(pid, port) == before, timeout=10), _established_on(pid, port)


@pytest.mark.skipif(shutil.which("ss") is None, reason="reads the listen backlog with ss")
def test_the_gateway_listens_with_room_for_a_connection_storm(stack: Any) -> None:
    """gevent's default backlog of 128 overflowed 40-60 times in a 10,000-connection storm (each a
    client's SYN retransmitted after 1 s); the kernel caps the backlog at net.core.somaxconn."""
    somaxconn = int(Path("/proc/sys/net/core/somaxconn").read_text())
    listing = subprocess.run(
        ["ss", "-ltnH", f"sport = :{stack.gateway_port}"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert listing[0] == "LISTEN", listing
    assert int(listing[2]) == min(LISTEN_BACKLOG, somaxconn), listing  # Send-Q of a listener: its backlog


# --- the close handshake ---------------------------------------------------------------------


def test_a_clients_close_is_answered_at_once_and_the_user_goes_offline(stack: Any, uid: str) -> None:
    """RFC 6455: the server answers a close frame and then closes the TCP connection, which clients
    such as `websockets` wait for (10 s close timeout); websocket-client only waits for the answer."""
    sync_user, async_user = f"wsc{uid}", f"wsa{uid}"
    ws = websocket.create_connection(
        connect_url(stack.ws_url, sync_user, LINUX, mint_token(sync_user, LINUX)), timeout=15
    )
    assert eventually(lambda: _online_platforms(sync_user) == [LINUX], timeout=5)
    started = time.monotonic()
    ws.close()
    assert time.monotonic() - started < 1.0
    assert eventually(lambda: not _online_platforms(sync_user), timeout=0.5)

    async def connect_and_close() -> float:
        async with async_connect(connect_url(stack.ws_url, async_user, LINUX, mint_token(async_user, LINUX))) as ws:
            await ws.send(json.dumps({"type": "ping"}))
            assert json.loads(await ws.recv()) == {"type": "pong", "body": None}
            assert _online_platforms(async_user) == [LINUX]
            started = time.monotonic()
            await ws.close()
            return time.monotonic() - started

    assert asyncio.run(connect_and_close()) < 1.0
    assert not _online_platforms(async_user)


# --- Flower ----------------------------------------------------------------------------------


def _procfile_command(name: str) -> str:
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name} in the Procfile")


def _listening_hosts(port: int) -> set[str]:
    """Local addresses listening on this TCP port (Linux /proc), as hex as the kernel writes them."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as lines:
            for line in list(lines)[1:]:
                local, state = line.split()[1], line.split()[3]
                address, hex_port = local.rsplit(":", 1)
                if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                    hosts.add(address)
    return hosts


def _run_flower(stack: Any, env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    with open(stack.log_path("flower-procfile"), "ab") as out:
        return subprocess.Popen(
            ["sh", "-c", _procfile_command("flower")],
            cwd=ROOT,
            # as `python -m app up` runs it: the virtualenv's commands first on PATH
            env={
                **stack.env,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                **env,
                "FLOWER_PORT": str(port),
            },
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def test_flower_is_local_and_asks_for_credentials(stack: Any) -> None:
    port = embedded.free_port()
    without = _run_flower(stack, {"FLOWER_BASIC_AUTH": ""}, port)
    try:
        assert without.wait(timeout=20) != 0, "Flower started without FLOWER_BASIC_AUTH"
    finally:
        if without.poll() is None:
            without.kill()
    assert "FLOWER_BASIC_AUTH" in stack.log_text("flower-procfile")

    proc = _run_flower(stack, {"FLOWER_BASIC_AUTH": "ops:s3cret-flower-pass"}, port)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return requests.get(f"{url}/healthcheck", timeout=2).status_code in (200, 401)
            except requests.RequestException:
                return proc.poll() is not None

        assert eventually(up, timeout=60) and proc.poll() is None, stack.log_text("flower-procfile")[-2000:]
        assert _listening_hosts(port) == {"0100007F"}, "Flower listens beyond 127.0.0.1"
        for page in ("/", "/tasks", "/api/workers"):
            assert requests.get(url + page, timeout=10).status_code == 401, page
            assert requests.get(url + page, auth=("ops", "wrong"), timeout=10).status_code == 401, page
        assert requests.get(url + "/tasks", auth=("ops", "s3cret-flower-pass"), timeout=10).status_code == 200
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)

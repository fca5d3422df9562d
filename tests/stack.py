"""Start the stack's processes (gateway and the four Celery workers) as real subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import requests

from app.ops import embedded

ROOT = Path(__file__).resolve().parent.parent
WORKERS = ("transfer", "persist", "push", "offline")


def _answers(http_url: str) -> bool:
    try:
        return requests.get(f"{http_url}/healthz", timeout=1).ok
    except requests.RequestException:
        return False


@dataclass(frozen=True)
class GatewayNode:
    name: str
    port: int
    node_id: str

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Stack:
    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir = log_dir
        self.gateway_port = embedded.free_port()
        self.node_id = f"gw-test-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            **env,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.gateway_port),
            "GATEWAY_NODE_ID": self.node_id,
            "PYTHONUNBUFFERED": "1",
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}
        self.overrides: dict[str, dict[str, str]] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.gateway_port}"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start_process(self, name: str, args: list[str], env_overrides: dict[str, str] | None = None) -> None:
        """Start (or start again, with the same overrides as the first time) one named process."""
        out = open(self.log_path(name), "ab")
        if env_overrides is not None:
            self.overrides[name] = env_overrides
        env = {**self.env, **self.overrides.get(name, {})}
        if args[0] == "worker":
            self.metrics_ports[name] = embedded.free_port()
            env["METRICS_PORT"] = str(self.metrics_ports[name])
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "app", *args], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )

    def metric(self, name: str, metric: str) -> float:
        """A counter's value from a process's Prometheus endpoint (0 when not exported yet)."""
        port = self.gateway_port if name == "gateway" else self.metrics_ports[name]
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        for line in text.splitlines():
            if line.startswith(metric + " "):
                return float(line.split()[1])
        return 0.0

    def start(self) -> Stack:
        for kind in WORKERS:
            self.start_process(kind, ["worker", kind])
        self.start_process("gateway", ["gateway"])
        deadline = time.monotonic() + 90
        for kind in WORKERS:
            self._wait_for_log(kind, " ready.", deadline)
        self._wait_for_gateway(deadline)
        return self

    def start_worker(
        self,
        name: str,
        kind: str,
        ready_marker: str = " ready.",
        timeout: float = 60,
        env: dict[str, str] | None = None,
    ) -> None:
        """Start one more worker process (e.g. a standby transfer worker) and wait for its marker."""
        self.start_process(name, ["worker", kind], env)
        self.wait_for_log(name, ready_marker, timeout)

    def start_gateway(self, name: str, env: dict[str, str] | None = None, timeout: float = 60) -> GatewayNode:
        """One more gateway node on its own port, sharing this stack's Redis, MongoDB and workers."""
        node = GatewayNode(name, embedded.free_port(), f"gw-{name}-{uuid.uuid4().hex[:6]}")
        overrides = {"GATEWAY_PORT": str(node.port), "GATEWAY_NODE_ID": node.node_id, **(env or {})}
        self.start_process(name, ["gateway"], overrides)
        self.metrics_ports[name] = node.port  # a gateway serves /metrics on its own port
        self._wait(name, lambda: _answers(node.http_url), time.monotonic() + timeout, "did not answer")
        return node

    def terminate(self, name: str, timeout: float = 15) -> None:
        proc = self.procs[name]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def restart(self, name: str, args: list[str], ready_marker: str, timeout: float = 90) -> None:
        """Start a stopped or killed process again, waiting for its marker written after now."""
        offset = self.log_path(name).stat().st_size if self.log_path(name).exists() else 0
        self.start_process(name, args)

        def came_back() -> bool:
            return ready_marker in self.log_text(name)[offset:]

        self._wait(name, came_back, time.monotonic() + timeout, "did not come back")

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown handlers, nothing acknowledged or released."""
        proc = self.procs[name]
        proc.kill()
        proc.wait(timeout=10)

    def wait_for_log(self, name: str, marker: str, timeout: float = 60) -> None:
        self._wait_for_log(name, marker, time.monotonic() + timeout)

    def log_text(self, name: str) -> str:
        return self.log_path(name).read_text(errors="replace")

    def _wait_for_log(self, name: str, marker: str, deadline: float) -> None:
        self._wait(name, lambda: marker in self.log_text(name), deadline, "did not become ready")

    def _wait_for_gateway(self, deadline: float) -> None:
        self._wait("gateway", lambda: _answers(f"http://127.0.0.1:{self.gateway_port}"), deadline, "did not answer")

    def _wait(self, name: str, ready: Callable[[], bool], deadline: float, failure: str) -> None:
        """Until `ready()`; the process exiting meanwhile, or the deadline, fails with its log's tail."""
        while time.monotonic() < deadline:
            if ready():
                return
            if self.procs[name].poll() is not None:
                raise RuntimeError(f"{name} exited early:\n{self.tail(name)}")
            time.sleep(0.2)
        raise RuntimeError(f"{name} {failure}:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path(name).read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def alive(self) -> dict[str, bool]:
        return {name: proc.poll() is None for name, proc in self.procs.items()}

    def core_alive(self, *extra: str) -> dict[str, bool]:
        """The shared gateway and the four workers (and the named extra processes): other tests stop
        their own extra gateways and workers on purpose, so those do not count."""
        return {name: self.procs[name].poll() is None for name in ("gateway", *WORKERS, *extra)}

    def stop(self) -> None:
        embedded.stop_processes(self.procs.values(), timeout=15)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

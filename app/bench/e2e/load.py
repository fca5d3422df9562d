"""Load clients of `python -m app bench e2e`: one process holds many websocket users on asyncio.

Each user is one websocket connection speaking our protocol (sdkType json, js or go). A user sends
SendMsg requests to its targets (single-chat peers and groups) in turn, either as fast as they are
acknowledged (`inflight` outstanding per user) or at the process's share of a fixed total rate.
Every message's content carries its send time (`time.monotonic()`, one clock for every process of
the machine), so whoever receives its push knows how long it took. Pushes of the sender's own
messages (the echo to the sending device) are counted apart: a delivery is to another user.

The parent (app/bench/e2e/run.py) starts these processes, releases them together, watches their
counters in a shared array, tells them when the pipeline has drained, and collects their results.
"""

from __future__ import annotations

import asyncio
import base64
import json
import resource
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import orjson
import uvloop
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from app.config import settings
from app.core import gob
from app.core.constants import GROUP_CHAT, SINGLE_CHAT, TEXT
from app.core.errors import RATE_LIMITED
from app.core.protocol import PUSH_MSG, SDK_GO, SDK_JS, SEND_MSG
from app.ops.runtime import tune_gc
from app.proto import sdkws_pb2 as pb

# Progress counters, one row of the shared array per process.
SENT, ACKED, REFUSED, DELIVERED, ECHOES, CONNECTED, OUTSTANDING, STATE = range(8)
FIELDS = 8
WARM_MARK = "w"  # starts warm-up clientMsgIDs; a run's tag starts with "b"
STATE_CONNECTING, STATE_READY, STATE_SENDING, STATE_ACKS, STATE_DRAINING, STATE_DONE = range(6)


@dataclass(frozen=True)
class Target:
    conversation_id: str
    recv_id: str  # the peer of a single chat; "" for a group
    group_id: str  # "" for a single chat
    fanout: int  # recipients other than the sender (1 for a single chat, members - 1 for a group)


@dataclass(frozen=True)
class UserSpec:
    index: int  # unique within the run: clientMsgIDs are `<tag><index in hex>-<n>`
    user_id: str
    token: str
    targets: tuple[Target, ...]


@dataclass(frozen=True)
class ProcSpec:
    proc_index: int
    url: str
    tag: str
    users: tuple[UserSpec, ...]
    rate: float  # this process's messages/s; 0 = as fast as acknowledged
    inflight: int
    duration: float
    platform_id: int
    sdk_type: str
    warm_up: bool = False  # one unmeasured message per conversation before the measured sending
    ack_timeout: float = 30.0
    connect_concurrency: int = 16


@dataclass
class ProcResult:
    proc_index: int
    connect_errors: list[str] = field(default_factory=list)
    connect_retries: int = 0
    sent: int = 0
    acked: int = 0
    refused: dict[int, int] = field(default_factory=dict)  # errCode -> count
    unanswered: int = 0
    expected_deliveries: int = 0  # sum of the fan-out of acknowledged messages
    delivered: int = 0
    echoes: int = 0
    duplicate_pushes: int = 0
    foreign_pushes: int = 0  # messages of no bench sender (group notifications...)
    closed_early: int = 0
    acked_ids: list[str] = field(default_factory=list)
    # float32 columns: ack latency (ms) by send time (s after the start); push latency likewise
    ack_at: array[float] = field(default_factory=lambda: array("f"))
    ack_ms: array[float] = field(default_factory=lambda: array("f"))
    push_at: array[float] = field(default_factory=lambda: array("f"))
    push_ms: array[float] = field(default_factory=lambda: array("f"))
    last_delivery: float = 0.0  # monotonic


class _Shared:
    """What the parent shares with a load process (multiprocessing objects, kept untyped)."""

    def __init__(self, progress: Any, go: Any, go_at: Any, finish: Any, out: Any) -> None:
        self.progress = progress
        self.go = go
        self.go_at = go_at
        self.finish = finish
        self.out = out


class User:
    def __init__(self, spec: UserSpec, proc: LoadProcess) -> None:
        self.spec = spec
        self.proc = proc
        self.ws: ClientConnection | None = None
        self.count = 0
        self.next_target = 0
        self.prefix = f"{proc.spec.tag}{spec.index:x}-"
        # warm-up clientMsgIDs do not start with the run's tag: neither counted nor checked in MongoDB
        self.warm_prefix = f"{WARM_MARK}{self.prefix}"
        self.pending: dict[str, tuple[float, int]] = {}  # msgIncr -> (send time, fan-out)
        self.waiters: dict[str, asyncio.Future[int]] = {}
        self.seen: set[str] = set()
        self.sdk_type = proc.spec.sdk_type
        self.protobuf = self.sdk_type in (SDK_GO, SDK_JS)  # data as protobuf (raw for gob, base64 for js)

    def url(self) -> str:
        query = {
            "token": self.spec.token,
            "sendID": self.spec.user_id,
            "platformID": str(self.proc.spec.platform_id),
            "operationID": f"{self.prefix}connect",
            "sdkType": self.proc.spec.sdk_type,
            "isBackground": "false",
            # the gateway answers {"errCode": 0} once the login is registered (not just the upgrade)
            "isMsgResp": "true",
        }
        return f"{self.proc.spec.url.rstrip('/')}/?{urlencode(query)}"

    def frame(self, target: Target, now: float, warm: bool = False) -> tuple[str, bytes]:
        cmid = f"{self.warm_prefix if warm else self.prefix}{self.count}"
        self.count += 1
        content = orjson.dumps({"content": f"bench {now:.6f}"})
        if self.protobuf:
            msg = pb.MsgData(
                sendID=self.spec.user_id,
                recvID=target.recv_id,
                groupID=target.group_id,
                clientMsgID=cmid,
                sessionType=GROUP_CHAT if target.group_id else SINGLE_CHAT,
                contentType=TEXT,
                content=content,
                createTime=int(time.time() * 1000),
            )
            if self.sdk_type == SDK_GO:
                req = gob.GeneralWsReq(
                    SEND_MSG, self.spec.token, self.spec.user_id, cmid, cmid, msg.SerializeToString()
                )
                return cmid, gob.encode_request(req)
            data: Any = base64.b64encode(msg.SerializeToString()).decode()
        else:
            data = {
                "sendID": self.spec.user_id,
                "recvID": target.recv_id,
                "groupID": target.group_id,
                "clientMsgID": cmid,
                "sessionType": GROUP_CHAT if target.group_id else SINGLE_CHAT,
                "contentType": TEXT,
                "content": base64.b64encode(content).decode(),
                "createTime": str(int(time.time() * 1000)),
                "options": {},
            }
        envelope = {
            "reqIdentifier": SEND_MSG,
            "token": self.spec.token,
            "sendID": self.spec.user_id,
            "operationID": cmid,
            "msgIncr": cmid,
            "data": data,
        }
        return cmid, orjson.dumps(envelope)

    async def send_next(self, waiter: asyncio.Future[int] | None = None, warm: bool = False) -> None:
        """Send one message to the next target; `waiter` gets its answer's errCode."""
        assert self.ws is not None
        target = self.spec.targets[self.next_target]
        self.next_target = (self.next_target + 1) % len(self.spec.targets)
        now = time.monotonic()
        cmid, frame = self.frame(target, now, warm)
        self.pending[cmid] = (now, target.fanout)
        if waiter is not None:
            self.waiters[cmid] = waiter
        if not warm:
            self.proc.result.sent += 1
        await self.ws.send(frame)

    async def warm_up(self, timeout: float) -> None:
        """One message to each target, answered before the measured sending starts: a conversation's
        first message creates its records, seq block and caches, which a running chat has long had."""
        loop = asyncio.get_running_loop()
        for _ in self.spec.targets:
            answer: asyncio.Future[int] = loop.create_future()
            await self.send_next(answer, warm=True)
            code = await asyncio.wait_for(answer, timeout)
            if code:
                raise RuntimeError(f"warm-up message of {self.spec.user_id} answered errCode {code}")

    # --- receiving ---

    async def read_forever(self) -> None:
        assert self.ws is not None
        try:
            async for raw in self.ws:
                now = time.monotonic()
                if isinstance(raw, str):
                    continue  # text frames are pings/pongs of the protocol
                if self.sdk_type == SDK_GO:
                    resp = gob.decode_response(raw)
                    req, incr, code, data = resp.req_identifier, resp.msg_incr, resp.err_code, resp.data
                else:
                    body = orjson.loads(raw)
                    req, incr = body.get("reqIdentifier"), str(body.get("msgIncr", ""))
                    code, data = int(body.get("errCode") or 0), body.get("data")
                if req == PUSH_MSG:
                    self.on_push(data, now)
                elif req == SEND_MSG:
                    self.on_ack(incr, code, now)
        except ConnectionClosed:
            pass
        finally:
            if not self.proc.closing:
                self.proc.result.closed_early += 1
            for waiter in self.waiters.values():
                if not waiter.done():
                    waiter.set_result(-1)

    def on_ack(self, cmid: str, code: int, now: float) -> None:
        sent = self.pending.pop(cmid, None)
        if sent is None:
            return
        if cmid.startswith(WARM_MARK):
            waiter = self.waiters.pop(cmid, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(code)
            return
        result = self.proc.result
        if code == 0:
            result.acked += 1
            result.acked_ids.append(cmid)
            result.expected_deliveries += sent[1]
            result.ack_at.append(sent[0] - self.proc.t0)
            result.ack_ms.append((now - sent[0]) * 1000.0)
        else:
            result.refused[code] = result.refused.get(code, 0) + 1
        waiter = self.waiters.pop(cmid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(code)

    def on_push(self, data: Any, now: float) -> None:
        if self.protobuf:
            raw = data if isinstance(data, bytes) else base64.b64decode(data or "")
            push = pb.PushMessages.FromString(raw)
            for pulled in push.msgs.values():
                for m in pulled.Msgs:
                    self.on_msg(m.clientMsgID, m.sendID, m.content, now)
            return
        for pulled in ((data or {}).get("msgs") or {}).values():
            for m in pulled.get("Msgs") or ():
                self.on_msg(str(m.get("clientMsgID", "")), str(m.get("sendID", "")), m.get("content", ""), now)

    def on_msg(self, cmid: str, send_id: str, content: str | bytes, now: float) -> None:
        result = self.proc.result
        if cmid.startswith(WARM_MARK):
            return
        if not cmid.startswith(self.proc.spec.tag):
            result.foreign_pushes += 1
            return
        if send_id == self.spec.user_id:
            result.echoes += 1
            return
        if cmid in self.seen:
            result.duplicate_pushes += 1
            return
        self.seen.add(cmid)
        result.delivered += 1
        result.last_delivery = now
        raw = content if isinstance(content, bytes) else base64.b64decode(content)
        text = str(orjson.loads(raw).get("content", ""))
        sent_at = float(text.split(" ", 1)[1])
        result.push_at.append(sent_at - self.proc.t0)
        result.push_ms.append((now - sent_at) * 1000.0)


async def log_in(user: User, answer_timeout: float, reason: Callable[[BaseException], str] = repr) -> str | None:
    """Open the user's websocket and wait for the gateway's login answer (isMsgResp): None once logged
    in (user.ws is set), else why not. A failed handshake raises, as websockets' connect does."""
    ws = await connect(
        user.url(), compression=None, max_size=2**22, ping_interval=None, open_timeout=30, close_timeout=2
    )
    try:
        answer = json.loads(await asyncio.wait_for(ws.recv(), answer_timeout))
    except (ConnectionClosed, TimeoutError, ValueError) as exc:
        answer = {"errCode": -1, "errMsg": reason(exc)}
    if isinstance(answer, dict) and answer.get("errCode") == 0:
        user.ws = ws
        return None
    await ws.close()
    return f"login not confirmed: {answer}"


class LoadProcess:
    def __init__(self, spec: ProcSpec, shared: _Shared) -> None:
        self.spec = spec
        self.shared = shared
        self.result = ProcResult(spec.proc_index)
        self.users = [User(u, self) for u in spec.users]
        self.t0 = 0.0
        self.closing = False
        self.state = STATE_CONNECTING
        self.row = spec.proc_index * FIELDS

    def publish_progress(self) -> None:
        r, p, row = self.result, self.shared.progress, self.row
        p[row + SENT] = r.sent
        p[row + ACKED] = r.acked
        p[row + REFUSED] = sum(r.refused.values())
        p[row + DELIVERED] = r.delivered
        p[row + ECHOES] = r.echoes
        p[row + CONNECTED] = sum(1 for u in self.users if u.ws is not None)
        p[row + OUTSTANDING] = sum(len(u.pending) for u in self.users)
        p[row + STATE] = self.state

    async def progress_forever(self) -> None:
        while True:
            self.publish_progress()
            await asyncio.sleep(0.2)

    async def connect_all(self) -> None:
        gate = asyncio.Semaphore(self.spec.connect_concurrency)

        async def one(user: User) -> None:
            error = ""
            for attempt in range(3):
                if attempt:
                    self.result.connect_retries += 1
                    await asyncio.sleep(0.5 * attempt)
                async with gate:
                    try:
                        refused = await log_in(user, answer_timeout=15)
                    except (OSError, InvalidHandshake, TimeoutError) as exc:
                        error = repr(exc)
                        continue
                    if refused is None:
                        return
                    error = refused
            self.result.connect_errors.append(f"{user.spec.user_id}: {error}")

        await asyncio.gather(*(one(u) for u in self.users))

    async def closed_loop(self, user: User, end: float) -> None:
        """As fast as acknowledged: the next message leaves when the previous one was answered."""
        loop = asyncio.get_running_loop()
        while time.monotonic() < end and user.ws is not None:
            future: asyncio.Future[int] = loop.create_future()
            try:
                await user.send_next(future)
            except ConnectionClosed:
                return
            code = await future
            if code == RATE_LIMITED:
                await asyncio.sleep(0.05)
            elif code < 0:
                return
            elif code:
                await asyncio.sleep(0.1)

    async def paced(self, senders: list[User], end: float) -> None:
        """A fixed rate: the messages due by now leave, round robin over the senders (open loop)."""
        sent = 0
        turn = 0
        while True:
            now = time.monotonic()
            if now >= end:
                return
            due = int((now - self.t0) * self.spec.rate) + 1 - sent
            for _ in range(max(0, due)):
                user = senders[turn % len(senders)]
                turn += 1
                try:
                    await user.send_next()
                except ConnectionClosed:
                    pass
                sent += 1
            await asyncio.sleep(0.002)

    async def run(self) -> ProcResult:
        progress = asyncio.create_task(self.progress_forever())
        await self.connect_all()
        readers = [asyncio.create_task(u.read_forever()) for u in self.users if u.ws is not None]
        if self.spec.warm_up:
            await asyncio.gather(*(u.warm_up(self.spec.ack_timeout) for u in self.users if u.ws is not None))
        self.state = STATE_READY
        self.shared.out.put(("ready", self.spec.proc_index, len(self.result.connect_errors)))
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.shared.go.wait)
        self.t0 = float(self.shared.go_at.value)
        await asyncio.sleep(max(0.0, self.t0 - time.monotonic()))
        self.state = STATE_SENDING
        end = self.t0 + self.spec.duration
        senders = [u for u in self.users if u.ws is not None and u.spec.targets]
        if senders:
            if self.spec.rate > 0:
                await self.paced(senders, end)
            else:
                await asyncio.gather(
                    *(self.closed_loop(u, end) for u in senders for _ in range(max(1, self.spec.inflight)))
                )
        self.state = STATE_ACKS
        deadline = time.monotonic() + self.spec.ack_timeout
        while any(u.pending for u in self.users) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        self.result.unanswered = sum(len(u.pending) for u in self.users)
        self.state = STATE_DRAINING
        while not self.shared.finish.is_set():
            await asyncio.sleep(0.1)
        self.closing = True
        # all at once: a close handshake may wait up to close_timeout for the server to drop the TCP connection
        await asyncio.gather(*(u.ws.close() for u in self.users if u.ws is not None), return_exceptions=True)
        await asyncio.gather(*readers, return_exceptions=True)
        self.state = STATE_DONE
        progress.cancel()
        self.publish_progress()
        return self.result


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def proc_main(spec: ProcSpec, progress: Any, go: Any, go_at: Any, finish: Any, out: Any) -> None:
    """Entry point of one load process (multiprocessing target)."""
    _raise_open_files()
    tune_gc(settings.gc_gen0_threshold)  # as the stack's processes: the clients' CPU is taken from it
    shared = _Shared(progress, go, go_at, finish, out)
    try:
        # uvloop: the load clients' event loop and transports in C (they share the machine with the
        # stack they measure, so what they spend is taken from it)
        result = uvloop.run(LoadProcess(spec, shared).run())
    except BaseException as exc:  # the parent must hear about it rather than wait forever
        out.put(("error", spec.proc_index, repr(exc)))
        raise
    out.put(("result", spec.proc_index, result))

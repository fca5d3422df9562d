"""Steady load from real websocket clients, and the audit of what they were told against what is stored.

Senders behave as OpenIM clients do: each message is resent with the same clientMsgID until the
gateway acknowledges it, and a sender whose gateway node disappears reconnects to another node.
Receivers stay online (reconnecting the same way) and record every push.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.cli.client import ImClient
from app.core.constants import LINUX
from app.core.conversation import group_conversation_id, single_conversation_id
from app.services.auth import mint_token
from tests.integration.helpers import stored_in_mongo

SEND_PAUSE_SECONDS = 0.05  # per sender: a steady load, not a saturating one (the bench does that)


class Connection:
    """A user's connection that follows the user to another gateway node when its node goes away."""

    def __init__(self, urls: list[str], user_id: str, first: int = 0) -> None:
        self.urls = urls
        self.user_id = user_id
        self.turn = first
        self.client: ImClient | None = None
        self.pushed: set[str] = set()
        self.lock = threading.Lock()

    def get(self) -> ImClient:
        with self.lock:
            if self.client is not None and not self.client.closed.is_set():
                return self.client
            self._collect()
            for _ in range(60):
                url = self.urls[self.turn % len(self.urls)]
                self.turn += 1
                try:
                    self.client = ImClient(url, self.user_id, LINUX, mint_token(self.user_id, LINUX), timeout=10)
                    return self.client
                except Exception:
                    time.sleep(0.5)
            raise RuntimeError(f"{self.user_id} found no gateway")

    def drop(self) -> None:
        with self.lock:
            if self.client is not None:
                self._collect()
                self.client.close()
                self.client = None

    def _collect(self) -> None:
        if self.client is None:
            return
        while not self.client.pushes.empty():
            data = self.client.pushes.get().get("data") or {}
            for pulled in [*data.get("msgs", {}).values(), *data.get("notificationMsgs", {}).values()]:
                self.pushed.update(m["clientMsgID"] for m in pulled.get("Msgs", []))

    def received(self) -> set[str]:
        with self.lock:
            self._collect()
            return set(self.pushed)


@dataclass
class Conversation:
    conv: str
    sender: str
    peer: str = ""  # single chat
    group: str = ""  # group chat
    acked: list[str] = field(default_factory=list)  # clientMsgIDs in acceptance order
    first_ack_after: dict[str, float] = field(default_factory=dict)


class Load:
    """`singles` single chats and one group of `group_size`, each conversation with one sender."""

    def __init__(
        self, tag: str, urls: list[str], singles: int, group_id: str = "", group_members: Sequence[str] = ()
    ) -> None:
        self.urls = urls
        self.stop = threading.Event()
        self.convs: list[Conversation] = []
        self.conns: dict[str, Connection] = {}
        for i in range(singles):
            sender, peer = f"s{tag}{i}", f"r{tag}{i}"
            self.convs.append(Conversation(single_conversation_id(sender, peer), sender, peer=peer))
        if group_id:
            self.convs.append(Conversation(group_conversation_id(group_id), group_members[0], group=group_id))
        users = {c.sender for c in self.convs} | {c.peer for c in self.convs if c.peer} | set(group_members)
        for n, user in enumerate(sorted(users)):
            self.conns[user] = Connection(urls, user, first=n)
        self.errors = 0
        self.last_ack = time.monotonic()
        self._threads = [threading.Thread(target=self._send_forever, args=(c,), daemon=True) for c in self.convs]

    def start(self) -> None:
        for conn in self.conns.values():
            conn.get()
        for thread in self._threads:
            thread.start()

    def acked_count(self) -> int:
        return sum(len(c.acked) for c in self.convs)

    def finish(self, timeout: float = 120) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout)
            assert not thread.is_alive(), "a sender never finished its last message"

    def close(self) -> None:
        for conn in self.conns.values():
            conn.drop()

    def _send_forever(self, conv: Conversation) -> None:
        conn = self.conns[conv.sender]
        i = 0
        while not self.stop.is_set():
            cid = f"{conv.conv}-{i}"
            self._send_until_acked(conn, conv, cid, i)
            conv.acked.append(cid)
            self.last_ack = time.monotonic()
            i += 1
            time.sleep(SEND_PAUSE_SECONDS)

    def _send_until_acked(self, conn: Connection, conv: Conversation, cid: str, i: int) -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                client = conn.get()
                if conv.group:
                    client.send_group_text(conv.group, str(i), client_msg_id=cid)
                else:
                    client.send_text(conv.peer, str(i), client_msg_id=cid)
                return
            except Exception:
                self.errors += 1
                time.sleep(0.2)
        raise AssertionError(f"{cid} was never accepted")


@dataclass
class Audit:
    acked: int = 0
    persisted: int = 0
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unreadable: int = 0  # seqs at or below the advertised max that pull as neither message nor placeholder
    missed_by_receivers: int = 0  # acked messages a receiver neither got pushed nor could pull
    details: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.duplicated or self.out_of_order or self.unreadable or self.missed_by_receivers)


def audit(load: Load, mongo_url: str, reader: Callable[[str], ImClient], stall: float = 60, most: float = 300) -> Audit:
    """Waits while the pipeline still makes progress (a backlog after a fault is slow, not lost):
    until every acknowledged message is stored, or nothing new was stored for `stall` seconds."""
    result = Audit()
    deadline = time.monotonic() + most
    for conv in load.convs:
        acked = conv.acked
        result.acked += len(acked)
        rows = stored_in_mongo(mongo_url, conv.conv)
        progress_at = time.monotonic()
        while not set(acked) <= {cid for _, cid in rows} and time.monotonic() < min(deadline, progress_at + stall):
            time.sleep(1)
            before = len(rows)
            rows = stored_in_mongo(mongo_url, conv.conv)
            if len(rows) > before:
                progress_at = time.monotonic()
        cids = [cid for _, cid in rows]
        ours = [cid for cid in cids if cid in set(acked)]
        result.persisted += len(set(ours))
        result.lost += len(set(acked) - set(cids))
        result.duplicated += len(ours) - len(set(ours))
        position = {cid: n for n, cid in enumerate(acked)}
        in_seq_order = [position[cid] for cid in dict.fromkeys(ours)]
        inversions = sum(1 for a, b in zip(in_seq_order, in_seq_order[1:], strict=False) if b < a)
        result.out_of_order += inversions
        if set(acked) - set(cids):
            result.details.append(f"{conv.conv}: lost {sorted(set(acked) - set(cids))[:5]}")
        # P5 and catching up: read everything through a gateway as a member would
        member = conv.peer or conv.sender
        client = reader(member)
        try:
            newest = client.newest_seqs().get(conv.conv, 0)
            pulled: dict[int, dict[str, Any]] = {}
            for begin in range(1, newest + 1, 100):
                for msg in client.pull_range(conv.conv, begin, min(newest, begin + 99))["Msgs"]:
                    pulled[int(msg["seq"])] = msg
        finally:
            client.close()
        low = min(pulled) if pulled else 1
        result.unreadable += sum(1 for seq in range(low, newest + 1) if seq not in pulled)
        readable = {m["clientMsgID"] for m in pulled.values() if int(m.get("status", 0)) != 4}
        if conv.peer:
            got = load.conns[conv.peer].received() | readable
            result.missed_by_receivers += len(set(acked) - got)
    return result

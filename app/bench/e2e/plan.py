"""What one `python -m app bench e2e` run does: its configuration and its load plan (who chats with whom)."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace

from app.bench.e2e.load import Target
from app.core.conversation import group_conversation_id, single_conversation_id


@dataclass(frozen=True)
class E2EConfig:
    users: int = 200
    conversations: int = -1  # single chats; -1: users // 2 (each user in one)
    groups: int = 0
    group_size: int = 10
    rate: float = 0.0  # total messages/s; 0 = as fast as acknowledged
    inflight: int = 1
    warm_up: bool = False  # each conversation's first message sent (and answered) before measuring
    duration: float = 30.0
    procs: int = 2
    gateway: str = ""
    api: str = ""
    sdk_type: str = "json"
    drain_timeout: float = 120.0
    sample_interval: float = 0.5
    seed: int = 1
    baseline: bool = False
    baseline_concurrency: int = 0  # 0: one prefork process per core
    smoke: bool = False
    progress: bool = True
    json_path: str = ""
    plot_path: str = ""

    @property
    def single_chats(self) -> int:
        return self.users // 2 if self.conversations < 0 else self.conversations

    def describe(self) -> str:
        mode = f"{self.rate:,.0f} msg/s" if self.rate > 0 else f"as fast as acknowledged (inflight {self.inflight})"
        groups = f" + {self.groups} groups of {self.group_size}" if self.groups else ""
        warm = ", conversations warmed up" if self.warm_up else ""
        return (
            f"{self.users} users, {self.single_chats} single chats{groups}, {mode}, {self.duration:g} s, "
            f"{self.procs} load processes, sdkType {self.sdk_type}{warm}"
        )


SMOKE = {"users": 20, "conversations": 10, "groups": 2, "group_size": 5, "duration": 3.0, "procs": 2}


def smoke_config(cfg: E2EConfig) -> E2EConfig:
    return replace(cfg, sample_interval=0.25, drain_timeout=60.0, **SMOKE)  # type: ignore[arg-type]


# --- the load plan -------------------------------------------------------------------------------


@dataclass
class Plan:
    tag: str
    users: list[str]
    pairs: list[tuple[int, int]]
    groups: list[tuple[str, list[int]]]

    def conversations(self) -> list[str]:
        singles = [single_conversation_id(self.users[a], self.users[b]) for a, b in self.pairs]
        return singles + [group_conversation_id(gid) for gid, _ in self.groups]

    def targets(self) -> dict[int, list[Target]]:
        out: dict[int, list[Target]] = {i: [] for i in range(len(self.users))}
        for a, b in self.pairs:
            conv = single_conversation_id(self.users[a], self.users[b])
            out[a].append(Target(conv, self.users[b], "", 1))
            out[b].append(Target(conv, self.users[a], "", 1))
        for gid, members in self.groups:
            for m in members:
                out[m].append(Target(group_conversation_id(gid), "", gid, len(members) - 1))
        return out


def make_plan(cfg: E2EConfig, tag: str) -> Plan:
    """Single chats: a random perfect matching first (every user in one), then random extra pairs;
    groups: random members. Deterministic for a seed."""
    rng = random.Random(cfg.seed)
    n = cfg.users
    if n < 2:
        raise SystemExit("--users must be at least 2")
    wanted = min(cfg.single_chats, n * (n - 1) // 2)
    order = list(range(n))
    rng.shuffle(order)
    pairs: list[tuple[int, int]] = []
    seen: set[tuple[int, int]] = set()
    for i in range(0, n - 1, 2):
        if len(pairs) >= wanted:
            break
        pair = (min(order[i], order[i + 1]), max(order[i], order[i + 1]))
        seen.add(pair)
        pairs.append(pair)
    while len(pairs) < wanted:
        a, b = rng.sample(range(n), 2)
        pair = (min(a, b), max(a, b))
        if pair not in seen:
            seen.add(pair)
            pairs.append(pair)
    groups = [(f"{tag}g{g}", rng.sample(range(n), min(cfg.group_size, n))) for g in range(cfg.groups)]
    return Plan(tag, [f"{tag}u{i}" for i in range(n)], pairs, groups)

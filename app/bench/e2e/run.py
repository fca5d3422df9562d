"""`python -m app bench e2e`: the whole pipeline under load, from real websocket clients.

Drives a RUNNING stack (`python -m app up`, or whatever REDIS_URL / MONGO_URL / BROKER_URL and
`--gateway` / `--api` name) with N users online in M single chats and G groups, from several load
processes (app/bench/e2e/load.py), at a fixed total rate or as fast as acknowledged, for a while. Then it
waits for the pipeline to drain and checks every message: acknowledged, delivered by push to each
other recipient, persisted in MongoDB's slot documents, lost (acknowledged, not persisted),
duplicated (pushed twice to one recipient, or stored twice). It reports throughput, ack and
send-to-push latency percentiles, CPU seconds and peak RSS of each stack process, how deep each
broker queue got, and the stage that held the rest back. `--baseline` runs the same load through
app/bench/baseline.py (one Celery task per message) right after, and prints the ratio.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue as queue_mod
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from app.bench.e2e import load as bench_load
from app.bench.e2e import report as bench_report
from app.bench.e2e.load import FIELDS, ProcResult, ProcSpec, UserSpec
from app.bench.e2e.plan import E2EConfig, Plan, make_plan, smoke_config
from app.bench.e2e.summary import PhaseData, Sample, summarise
from app.bench.e2e.watch import ProcessWatch, QueueDepth, discover_stack
from app.config import secrets, settings
from app.core.constants import LINUX
from app.core.conversation import MSGS_PER_DOC, transfer_queue
from app.ops import embedded
from app.store.mongo import client as mongo
from app.store.redis import msg_cache

ROOT = Path(__file__).resolve().parents[3]  # the checkout


# --- REST setup through the gateway --------------------------------------------------------------


def _rest(session: requests.Session, api: str, path: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
    headers = {"operationID": uuid.uuid4().hex, **({"token": token} if token else {})}
    answer: dict[str, Any] = session.post(f"{api.rstrip('/')}{path}", json=body, headers=headers, timeout=30).json()
    if answer.get("errCode"):
        raise SystemExit(f"{path} answered {answer.get('errCode')}: {answer.get('errMsg')}")
    return answer


def admin_token(api: str) -> str:
    with requests.Session() as s:
        answer = _rest(s, api, "/auth/get_admin_token", {"secret": secrets().admin_secret, "userID": "imAdmin"})
    return str(answer["data"]["token"])


def user_tokens(api: str, admin: str, users: list[str], platform_id: int) -> list[str]:
    """One `POST /auth/get_user_token` per user, as an OpenIM app server would ask."""

    def chunk(ids: list[str]) -> list[str]:
        with requests.Session() as s:
            body = {"platformID": platform_id}
            return [
                str(_rest(s, api, "/auth/get_user_token", {**body, "userID": u}, admin)["data"]["token"]) for u in ids
            ]

    parts = [users[i::8] for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(chunk, parts))
    tokens = [""] * len(users)
    for i, part in enumerate(answered):
        for j, token in enumerate(part):
            tokens[i + 8 * j] = token
    return tokens


def create_groups(api: str, admin: str, plan: Plan) -> None:
    with requests.Session() as s:
        for gid, members in plan.groups:
            ids = [plan.users[m] for m in members]
            body = {"groupInfo": {"groupID": gid, "groupName": gid}, "ownerUserID": ids[0], "memberUserIDs": ids[1:]}
            _rest(s, api, "/group/create_group", body, admin)


# --- checking what the pipeline did --------------------------------------------------------------


def stored_client_msg_ids(conversations: list[str], tag: str) -> dict[str, int]:
    """clientMsgID -> how many slots hold it, for this run's messages, read from MongoDB `msg` documents."""
    maxes = msg_cache.get_visible_max_seqs(conversations)
    coll = mongo.get_db().msg
    counts: dict[str, int] = {}
    for conv in conversations:
        top = maxes.get(conv) or 0
        first, last = 0, (top - 1) // MSGS_PER_DOC if top else 0
        while True:
            ids = [f"{conv}:{i}" for i in range(first, last + 1)]
            docs = list(coll.find({"doc_id": {"$in": ids}}, {"_id": 0, "doc_id": 1, "msgs.msg.client_msg_id": 1}))
            for doc in docs:
                for slot in doc.get("msgs") or []:
                    cmid = ((slot or {}).get("msg") or {}).get("client_msg_id", "")
                    if cmid.startswith(tag):
                        counts[cmid] = counts.get(cmid, 0) + 1
            if ids[-1] not in {d["doc_id"] for d in docs}:
                break  # the last document asked for is missing: none beyond it either
            first = last = last + 1  # the visible max may lag what was written: look one further
    return counts


# --- running one phase ---------------------------------------------------------------------------


def _sum(progress: Any, procs: int, index: int) -> int:
    return int(sum(progress[p * FIELDS + index] for p in range(procs)))


def _states(progress: Any, procs: int) -> list[int]:
    return [int(progress[p * FIELDS + bench_load.STATE]) for p in range(procs)]


def wait_idle(queue_names: list[str], timeout: float) -> None:
    depth = QueueDepth(settings.effective_broker_url, queue_names)
    try:
        depth.wait_drained(timeout)
    finally:
        depth.close()


def run_phase(label: str, cfg: E2EConfig, ws_url: str, api_url: str, queue_names: list[str]) -> PhaseData:
    wait_idle(queue_names, max(cfg.drain_timeout, 60.0))
    started = time.monotonic()
    tag = f"b{uuid.uuid4().hex[:6]}"
    plan = make_plan(cfg, tag)
    admin = admin_token(api_url)
    tokens = user_tokens(api_url, admin, plan.users, LINUX)
    create_groups(api_url, admin, plan)
    targets = plan.targets()
    senders = sum(1 for t in targets.values() if t)
    procs = max(1, min(cfg.procs, cfg.users))
    specs = []
    for p in range(procs):
        users = tuple(
            UserSpec(i, plan.users[i], tokens[i], tuple(targets[i])) for i in range(p, len(plan.users), procs)
        )
        proc_senders = sum(1 for u in users if u.targets)
        rate = cfg.rate * proc_senders / senders if cfg.rate > 0 and senders else 0.0
        specs.append(
            ProcSpec(p, ws_url, tag, users, rate, cfg.inflight, cfg.duration, LINUX, cfg.sdk_type, cfg.warm_up)
        )

    ctx = mp.get_context("spawn")
    progress = ctx.RawArray("d", procs * FIELDS)
    go, finish, out = ctx.Event(), ctx.Event(), ctx.Queue()
    go_at = ctx.RawValue("d", 0.0)
    workers = [
        ctx.Process(target=bench_load.proc_main, args=(s, progress, go, go_at, finish, out), daemon=True) for s in specs
    ]
    for w in workers:
        w.start()
    results: dict[int, ProcResult] = {}
    try:
        connect_errors = _wait_ready(out, procs, progress, cfg)
        if cfg.warm_up:  # the warm-up's pushes and writes are done before anything is measured
            wait_idle(queue_names, max(cfg.drain_timeout, 60.0))
        roles = discover_stack(settings.redis_url, settings.mongo_url)
        import psutil

        roles["bench clients"] = [psutil.Process(w.pid) for w in workers if w.pid is not None]
        watch = ProcessWatch(roles)
        depth = QueueDepth(settings.effective_broker_url, queue_names)
        setup_s = time.monotonic() - started
        samples: list[Sample] = []
        watch.start()
        t0 = time.monotonic() + 0.3
        go_at.value = t0
        go.set()
        with bench_report.LiveProgress(cfg.progress, label, cfg.duration) as live:

            def sample() -> Sample:
                s = Sample(
                    t=time.monotonic() - t0,
                    sent=_sum(progress, procs, bench_load.SENT),
                    acked=_sum(progress, procs, bench_load.ACKED),
                    delivered=_sum(progress, procs, bench_load.DELIVERED),
                    queues=depth.sample(),
                    in_flight=depth.in_flight(),
                    cpu=watch.sample(),
                )
                samples.append(s)
                live.update(s, samples)
                return s

            # sending, then the last acknowledgements
            while min(_states(progress, procs)) < bench_load.STATE_DRAINING:
                time.sleep(cfg.sample_interval)
                sample()
                if time.monotonic() - t0 > cfg.duration + 120:
                    raise SystemExit("load processes did not finish sending within 120 s of the end")
                if any(not w.is_alive() for w in workers):
                    _raise_child_error(out)
            watch.mark()
            live.draining()
            drain_start = time.monotonic()
            drained = False
            quiet_since: float | None = None
            last_delivered = -1
            while time.monotonic() - drain_start < cfg.drain_timeout:
                time.sleep(cfg.sample_interval)
                s = sample()
                idle = sum(s.queues.values()) == 0 and s.in_flight == 0
                if idle and s.delivered == last_delivered:
                    quiet_since = quiet_since or time.monotonic()
                    if time.monotonic() - quiet_since >= 1.0:
                        drained = True
                        break
                else:
                    quiet_since = None
                last_delivered = s.delivered
            drain_s = time.monotonic() - drain_start
        finish.set()
        deadline = time.monotonic() + 120
        while len(results) < procs and time.monotonic() < deadline:
            try:
                kind, index, payload = out.get(timeout=1)
            except queue_mod.Empty:
                if any(not w.is_alive() and w.exitcode for w in workers):
                    raise SystemExit("a load process died") from None
                continue
            if kind == "error":
                raise SystemExit(f"load process {index} failed: {payload}")
            if kind == "result":
                results[index] = payload
        for w in workers:
            w.join(timeout=10)
        depth.close()
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
    acked = {cmid for r in results.values() for cmid in r.acked_ids}
    stored = stored_client_msg_ids(plan.conversations(), tag)
    tries = 0
    while drained and len(acked - set(stored)) and tries < 5:  # a broker that hides in-flight work
        time.sleep(1)
        stored = stored_client_msg_ids(plan.conversations(), tag)
        tries += 1
    return PhaseData(
        label=label,
        cfg=cfg,
        plan=plan,
        results=[results[i] for i in sorted(results)],
        samples=samples,
        watch=watch,
        drained=drained,
        drain_s=drain_s,
        stored=stored,
        queue_names=queue_names,
        setup_s=setup_s,
        connect_errors=connect_errors,
    )


def _wait_ready(out: Any, procs: int, progress: Any, cfg: E2EConfig) -> int:
    ready = 0
    errors = 0
    deadline = time.monotonic() + 60 + cfg.users / 20
    while ready < procs:
        if time.monotonic() > deadline:
            raise SystemExit("load processes did not connect their users in time")
        try:
            kind, index, payload = out.get(timeout=1)
        except queue_mod.Empty:
            continue
        if kind == "error":
            raise SystemExit(f"load process {index} failed: {payload}")
        if kind == "ready":
            ready += 1
            errors += int(payload)
    if errors:
        print(f"warning: {errors} of {cfg.users} users could not connect", file=sys.stderr)
    if errors == cfg.users:
        raise SystemExit("no user could connect: is the gateway running at the given --gateway?")
    return errors


def _raise_child_error(out: Any) -> None:
    with contextlib.suppress(queue_mod.Empty):
        while True:
            kind, index, payload = out.get_nowait()
            if kind == "error":
                raise SystemExit(f"load process {index} failed: {payload}")
    raise SystemExit("a load process exited early")


# --- the baseline's processes --------------------------------------------------------------------


class BaselineStack:
    """The naive gateway and worker of app/bench/baseline.py, started and stopped by the benchmark."""

    def __init__(self, concurrency: int) -> None:
        self.port = embedded.free_port()
        self.log_dir = Path(tempfile.mkdtemp(prefix="openim-baseline-"))
        self.concurrency = concurrency or (os.cpu_count() or 2)
        self.env = {
            **os.environ,
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_NODE_ID": f"gw-baseline-{self.port}",
            "PYTHONUNBUFFERED": "1",
            "REDIS_URL": settings.redis_url,
            "MONGO_URL": settings.mongo_url,
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _start(self, name: str, args: list[str]) -> None:
        out = open(self.log_dir / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "app.bench.baseline", *args],
            cwd=ROOT,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )

    def start(self) -> BaselineStack:
        self._start("worker", ["worker", "--concurrency", str(self.concurrency)])
        self._start("gateway", ["gateway"])
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise SystemExit(f"baseline {name} exited: see {self.log_dir / (name + '.log')}")
            worker_ready = " ready." in (self.log_dir / "worker.log").read_text(errors="replace")
            try:
                gateway_ready = requests.get(f"{self.api_url}/healthz", timeout=1).ok
            except requests.RequestException:
                gateway_ready = False
            if worker_ready and gateway_ready:
                return self
            time.sleep(0.3)
        raise SystemExit(f"the baseline did not start within 90 s: see {self.log_dir}")

    def stop(self) -> None:
        embedded.stop_processes(self.procs.values(), timeout=20)


# --- the command ---------------------------------------------------------------------------------


def pipeline_queues() -> list[str]:
    return [transfer_queue(k) for k in range(settings.transfer_shards)] + ["persist", "push", "offline"]


def check_stack(api_url: str) -> dict[str, Any]:
    try:
        health: dict[str, Any] = requests.get(f"{api_url.rstrip('/')}/healthz", timeout=5).json()
    except (requests.RequestException, ValueError) as exc:
        raise SystemExit(f"no gateway answers at {api_url}: start the stack first (python -m app up)") from exc
    return health


def run_e2e(cfg: E2EConfig) -> dict[str, Any]:
    if cfg.smoke:
        cfg = smoke_config(cfg)
    ws_url = cfg.gateway or f"ws://{settings.gateway_host}:{settings.gateway_port}"
    api_url = cfg.api or ws_url.replace("ws://", "http://", 1).replace("wss://", "https://", 1)
    cfg = replace(cfg, gateway=ws_url, api=api_url)
    mongo.ensure_indexes()
    health = check_stack(api_url)
    bench_report.announce(cfg, health)
    ours = run_phase("pipeline", cfg, ws_url, api_url, pipeline_queues())
    report: dict[str, Any] = summarise(ours)
    phases, summaries = [ours], [report]
    if cfg.baseline:
        time.sleep(2)
        base_stack = BaselineStack(cfg.baseline_concurrency).start()
        try:
            base = run_phase("baseline", cfg, base_stack.ws_url, base_stack.api_url, [*pipeline_queues(), "baseline"])
        finally:
            base_stack.stop()
            QueueDepth(settings.effective_broker_url, ["baseline"]).purge("baseline")
        report["baseline"] = summarise(base)
        report["baseline"]["worker_concurrency"] = base_stack.concurrency
        report["ratio"] = ratio(report, report["baseline"])
        phases.append(base)
        summaries.append(report["baseline"])
    bench_report.print_report(report)
    if cfg.json_path:
        Path(cfg.json_path).write_text(json.dumps(report, indent=1))
        print(f"JSON written to {cfg.json_path}")
    if cfg.plot_path:
        bench_report.plot(phases, summaries, cfg.plot_path)
        print(f"plot written to {cfg.plot_path}")
    return report


def ratio(ours: dict[str, Any], base: dict[str, Any]) -> dict[str, float | None]:
    def div(a: float, b: float) -> float | None:
        return round(a / b, 2) if b else None

    ours_t, base_t = ours["throughput"], base["throughput"]
    return {
        "accepted_msgs_per_s": div(ours_t["accepted_msgs_per_s"], base_t["accepted_msgs_per_s"]),
        "deliveries_per_s": div(ours_t["deliveries_per_s"], base_t["deliveries_per_s"]),
        "push_p99_lower_by": div(base["latency_ms"]["push"]["p99"], ours["latency_ms"]["push"]["p99"]),
        "ack_p99_lower_by": div(base["latency_ms"]["ack"]["p99"], ours["latency_ms"]["ack"]["p99"]),
    }

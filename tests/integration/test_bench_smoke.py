"""`python -m app bench e2e --smoke` against the test stack: every message accounted for (never speed)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from app.bench.e2e.load import WARM_MARK
from app.bench.e2e.plan import E2EConfig, make_plan, smoke_config
from app.bench.e2e.watch import QueueDepth
from app.celery_app import celery_app
from app.store.mongo import client as mongo
from tests.integration.helpers import eventually
from tests.stack import ROOT


def run_bench(stack: Any, args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m app bench ARGS` against the test stack; fails the test when it fails."""
    run = subprocess.run(
        [sys.executable, "-m", "app", "bench", *args],
        cwd=ROOT,
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, f"bench failed ({run.returncode}):\n{run.stdout[-4000:]}\n{run.stderr[-4000:]}"
    return run


def test_bench_smoke_accounts_for_every_message(stack: Any, tmp_path: Path) -> None:
    report_path, plot_path = tmp_path / "bench.json", tmp_path / "bench.png"
    run_bench(
        stack,
        ["e2e", "--smoke", "--no-progress", "--gateway", stack.ws_url]
        + ["--json", str(report_path), "--plot", str(plot_path)],
        timeout=240,
    )
    report = json.loads(report_path.read_text())
    msgs = report["messages"]

    assert report["drained"] is True
    assert msgs["acknowledged"] > 0
    assert msgs["acknowledged"] == msgs["persisted"]
    assert msgs["lost"] == 0
    assert msgs["duplicated"] == 0
    assert msgs["deliveries"] > 0
    # every acknowledged message reached every other online recipient (single chats and groups)
    assert msgs["deliveries"] == msgs["expected_deliveries"]
    assert report["conversations"] == {"single": 10, "groups": 2}
    for kind in ("ack", "push"):
        lat = report["latency_ms"][kind]
        assert lat["count"] > 0
        assert 0 <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    names = {p["name"] for p in report["processes"]}
    assert {"gateway", "worker transfer", "worker persist", "worker push", "bench clients"} <= names
    assert set(report["queues"]) >= {"transfer.0", "persist", "push", "offline"}
    assert report["bottleneck"]
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_warm_up_messages_are_sent_and_stored_but_not_measured(stack: Any, tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    run_bench(
        stack,
        ["e2e", "--smoke", "--warm-up", "--rate", "40", "--no-progress", "--gateway", stack.ws_url]
        + ["--json", str(report_path)],
        timeout=240,
    )
    report = json.loads(report_path.read_text())
    msgs = report["messages"]
    assert "conversations warmed up" in report["description"]
    assert report["drained"] is True
    # the measured messages alone: the paced sender's count, each acknowledged, stored and delivered once
    assert msgs["sent"] == msgs["acknowledged"] == msgs["persisted"] > 0
    assert msgs["persisted_unacknowledged"] == 0
    assert msgs["duplicated"] == 0
    assert msgs["deliveries"] == msgs["expected_deliveries"]
    # and before them, one stored warm-up message per sender and conversation (single chats and groups)
    plan = make_plan(smoke_config(E2EConfig(seed=report["config"]["seed"])), report["tag"])
    expected = sum(len(targets) for targets in plan.targets().values())
    prefix = WARM_MARK + report["tag"]
    convs = plan.conversations()
    docs = mongo.get_db().msg.find({"doc_id": {"$in": [f"{c}:0" for c in convs]}}, {"msgs.msg.client_msg_id": 1})
    warm = [
        cmid
        for doc in docs
        for slot in doc.get("msgs") or []
        if (cmid := ((slot or {}).get("msg") or {}).get("client_msg_id", "")).startswith(prefix)
    ]
    assert len(warm) == len(set(warm)) == expected


def consumed_queues() -> dict[str, list[str]]:
    replies = celery_app.control.inspect(timeout=3).active_queues() or {}
    return {worker: sorted(q["name"] for q in queues) for worker, queues in replies.items()}


def test_bench_transfer_runs_alone_then_gives_the_queues_back(stack: Any) -> None:
    before = consumed_queues()
    assert any("persist" in queues for queues in before.values())
    run = run_bench(stack, ["transfer", "--messages", "400", "--conversations", "20", "--batch", "50"], timeout=600)
    lines = [line.split() for line in run.stdout.splitlines()]
    rows = {
        " ".join(words[:2]): words for words in lines if " ".join(words[:2]) in ("whole pipeline", "transfer alone")
    }
    assert set(rows) == {"whole pipeline", "transfer alone"}, run.stdout
    assert all(row[2] == "400" for row in rows.values()), run.stdout
    # persist, push and offline consume again, on the same workers as before
    assert consumed_queues() == before
    depth = QueueDepth(stack.env["BROKER_URL"], ["persist", "push", "offline"])
    try:
        assert eventually(lambda: not any(depth.sample().values()), timeout=120), depth.sample()
    finally:
        depth.close()


def test_bench_connections_holds_them_while_some_chat(stack: Any, tmp_path: Path) -> None:
    """A handful of connections held two seconds while six of them chat: the printed counts add up."""
    report_path = tmp_path / "connections.json"
    run = run_bench(
        stack,
        ["connections", "--url", stack.ws_url, "--count", "12", "--hold", "2", "--chatting", "6"]
        + ["--rate", "15", "--json", str(report_path)],
        timeout=120,
    )
    report = json.loads(report_path.read_text())
    msgs = report["messages"]

    assert (report["opened"], report["failed"], report["dropped"]) == (12, 0, 0), run.stdout
    assert report["chatting"] == 6
    assert msgs["sent"] > 0
    assert msgs["sent"] == msgs["acked"] + msgs["refused"] + msgs["unanswered"]
    assert (msgs["refused"], msgs["unanswered"], msgs["duplicate_pushes"]) == (0, 0, 0)
    # a single chat has one recipient: every acknowledged message pushed to the peer once
    assert msgs["delivered"] == msgs["expected_deliveries"] == msgs["acked"]
    assert report["latency_ms"]["ack"]["count"] == msgs["acked"]
    assert report["latency_ms"]["push"]["count"] == msgs["delivered"]
    for kind in ("ack", "push"):
        lat = report["latency_ms"][kind]
        assert 0 <= lat["p50"] <= lat["p99"] <= lat["max"]
    assert report["gateway"]["found"] is True  # the test stack's gateway runs on this machine
    # what was printed is what was measured
    assert "opened 12, failed 0 " in run.stdout, run.stdout
    assert "dropped 0;" in run.stdout, run.stdout
    sent_line = f"sent {msgs['sent']:,}, acked {msgs['acked']:,} (refused 0, unanswered 0)"
    assert f"{sent_line}, delivered {msgs['delivered']:,} of {msgs['expected_deliveries']:,}" in run.stdout, run.stdout

"""P7 in the pipeline: one bad message never costs anyone else's; it is dead-lettered alone, with its reason.

These are tests of the pipeline's own line of defence: batches are published straight to the
queues, as a gateway that let something through (or another publisher) would, so the edge's
validation does not hide what the workers do.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from functools import partial
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from app.celery_app import celery_app
from app.cli.client import ImClient
from app.core import protocol
from app.core.constants import MSG_FROM_USER, MSG_STATUS_SENDING
from app.core.conversation import shard_of, single_conversation_id, transfer_queue
from app.pipeline import dead_letters, journal
from app.proto import sdkws_pb2 as pb
from app.store.mongo import client as mongo
from app.store.mongo import seq_users
from app.store.redis.client import get_broker_redis, get_redis
from app.store.redis.keys import dead_letters_key, journal_key
from app.tasks.persist import persist_batch
from app.tasks.push import push_batch
from tests.integration.helpers import eventually, login
from tests.stack import ROOT

SHARDS = 4  # the tests' TRANSFER_SHARDS


def gateway_doc(
    sender: str,
    receiver: str,
    client_msg_id: str,
    content: str,
    content_type: int = 101,
    options: dict[str, bool] | None = None,
) -> dict[str, Any]:
    """A SendMsg as the gateway publishes it: server fields filled (prepare_outgoing), then
    protocol.msgdata_to_doc."""
    now = int(time.time() * 1000)
    msg = pb.MsgData(
        sendID=sender,
        recvID=receiver,
        clientMsgID=client_msg_id,
        serverMsgID=uuid.uuid4().hex,
        senderPlatformID=7,
        sessionType=1,
        msgFrom=MSG_FROM_USER,
        contentType=content_type,
        content=content.encode(),
        sendTime=now,
        createTime=now,
        status=MSG_STATUS_SENDING,
        options=options or {},
    )
    return protocol.msgdata_to_doc(msg)


def text(sender: str, receiver: str, client_msg_id: str, **extra: Any) -> dict[str, Any]:
    return gateway_doc(sender, receiver, client_msg_id, json.dumps({"content": client_msg_id}), **extra)


def pairs_on_shard(tag: str, shard: int, count: int) -> list[tuple[str, str]]:
    """(sender, receiver) pairs whose conversations all hash to `shard`."""
    found: list[tuple[str, str]] = []
    for i in range(10_000):
        pair = (f"q{tag}s{i}", f"q{tag}r{i}")
        if shard_of(single_conversation_id(*pair), SHARDS) == shard:
            found.append(pair)
            if len(found) == count:
                return found
    raise AssertionError("not enough conversations on one shard")


def stored_client_msg_ids(conv: str) -> list[str]:
    docs = mongo.get_db().msg.find({"doc_id": {"$regex": f"^{conv}:"}})
    return [slot["msg"]["client_msg_id"] for d in docs for slot in d["msgs"] if slot and slot.get("msg")]


def stored_seqs(conv: str) -> dict[str, int]:
    docs = mongo.get_db().msg.find({"doc_id": {"$regex": f"^{conv}:"}})
    return {s["msg"]["client_msg_id"]: int(s["msg"]["seq"]) for d in docs for s in d["msgs"] if s and s.get("msg")}


def drain_pushes(client: ImClient, expected: int, timeout: float = 30) -> list[str]:
    """clientMsgIDs pushed to `client`: the expected number, then whatever else comes in a second."""
    got = [m["clientMsgID"] for m in client.pushed_msgs(expected, timeout=timeout)]
    time.sleep(1.0)
    while True:
        try:
            push = client.pushes.get_nowait()
        except queue.Empty:
            return got
        for pulled in (push.get("data") or {}).get("msgs", {}).values():
            got.extend(m["clientMsgID"] for m in pulled.get("Msgs", []))


def message_docs(payload: Any) -> Iterator[dict[str, Any]]:
    """Every message doc inside a dead letter's payload, whatever its stage's shape."""
    if isinstance(payload, dict):
        if "client_msg_id" in payload:
            yield payload
            return
        payload = list(payload.values())
    if isinstance(payload, list):
        for item in payload:
            yield from message_docs(item)


def entries_for(stage: str, client_msg_ids: set[str]) -> dict[str, dead_letters.DeadLetter]:
    """The stage's dead letters holding these messages, by clientMsgID."""
    out: dict[str, dead_letters.DeadLetter] = {}
    for entry in dead_letters.list_entries(stage, limit=10_000):
        for doc in message_docs(entry.payload):
            if doc.get("client_msg_id") in client_msg_ids:
                out[doc["client_msg_id"]] = entry
    return out


@pytest.fixture
def clients() -> Iterator[list[ImClient]]:
    opened: list[ImClient] = []
    yield opened
    for client in opened:
        client.close()


def test_a_nul_options_key_and_a_deep_read_receipt_cost_nobody_else_their_messages(
    stack: Any, clients: list[ImClient]
) -> None:
    """One transfer batch: 20 good messages of six conversations, a message whose options key holds
    a NUL (MongoDB refuses it) between two good ones of its own conversation, and a read receipt
    nested 955 deep (json.loads overflows a worker's stack). Every good message is pushed and stored
    exactly once, in order; each bad one is dead-lettered alone with its reason; nothing died."""
    tag = uuid.uuid4().hex[:6]
    shard = 1
    pairs = pairs_on_shard(tag, shard, 8)
    good_pairs, (mallory, victim), (mallet, reader) = pairs[:6], pairs[6], pairs[7]
    for _sender, receiver in [*good_pairs, (mallory, victim), (mallet, reader)]:
        clients.append(login(stack, receiver))

    batch: list[dict[str, Any]] = []
    expected: dict[str, list[str]] = {}  # receiver -> clientMsgIDs it must get
    for i in range(20):
        sender, receiver = good_pairs[i % len(good_pairs)]
        cid = f"{sender}-good-{i}"
        batch.append(text(sender, receiver, cid))
        expected.setdefault(receiver, []).append(cid)
        if i == 5:
            batch.append(text(mallory, victim, f"{mallory}-before"))
            batch.append(text(mallory, victim, f"{mallory}-nul", options={"a\u0000b": True}))
            batch.append(text(mallory, victim, f"{mallory}-after"))
        if i == 12:
            deep = '{"hasReadSeq": 1, "x": ' + "[" * 955 + "]" * 955 + "}"
            batch.append(gateway_doc(mallet, reader, f"{mallet}-deep", deep, content_type=2200))
    expected[victim] = [f"{mallory}-before", f"{mallory}-after"]
    expected[reader] = []
    bad = {f"{mallory}-nul", f"{mallet}-deep"}

    celery_app.send_task("transfer.batch", args=[batch], kwargs={"journal": None}, queue=transfer_queue(shard))

    for client in clients:
        pushed = drain_pushes(client, len(expected[client.user_id]))
        assert sorted(pushed) == sorted(expected[client.user_id]), f"pushes to {client.user_id}"
    for sender, receiver in [*good_pairs, (mallory, victim)]:
        conv, want = single_conversation_id(sender, receiver), sorted(expected[receiver])
        stored = eventually(partial(lambda c, w: sorted(stored_client_msg_ids(c)) == w, conv, want))
        assert stored, f"{conv}: {stored_client_msg_ids(conv)} stored, {want} expected"
    seqs = stored_seqs(single_conversation_id(mallory, victim))
    assert seqs[f"{mallory}-before"] < seqs[f"{mallory}-after"]  # P3 around the quarantined message

    def both_dead_lettered() -> dict[str, dead_letters.DeadLetter]:
        found = entries_for("transfer", bad)
        return found if len(found) == 2 else {}

    letters = eventually(both_dead_lettered)
    assert letters, dead_letters.list_entries("transfer")
    assert "NUL" in letters[f"{mallory}-nul"].reason
    assert "nests deeper" in letters[f"{mallet}-deep"].reason
    assert letters[f"{mallory}-nul"].conversation == single_conversation_id(mallory, victim)
    assert stack.metric("transfer", 'dead_letters_total{stage="transfer"}') >= 2
    assert all(stack.core_alive().values()), stack.alive()


def test_persist_writes_the_rest_of_a_run_around_a_message_mongodb_refuses(stack: Any, uid: str) -> None:
    """A persist hand-off reaching MongoDB with a NUL key in one message: the run is split around it,
    its slot stays empty (a status-4 placeholder), every other message and run is written."""
    conv, other = single_conversation_id(f"pa{uid}", f"pb{uid}"), single_conversation_id(f"pc{uid}", f"pd{uid}")
    run = [text(f"pa{uid}", f"pb{uid}", f"pa{uid}-{i}") | {"seq": i + 1, "status": 2} for i in range(5)]
    run[2]["options"] = {"x\u0000y": True}
    second = [text(f"pc{uid}", f"pd{uid}", f"pc{uid}-{i}") | {"seq": i + 1, "status": 2} for i in range(3)]
    journal.send(persist_batch, [[[conv, run], [other, second]], [[conv, f"pb{uid}", 2]]], "persist")

    kept = [m["client_msg_id"] for i, m in enumerate(run) if i != 2]
    assert eventually(lambda: sorted(stored_client_msg_ids(conv)) == sorted(kept), timeout=30), stored_client_msg_ids(
        conv
    )
    assert eventually(lambda: len(stored_client_msg_ids(other)) == 3)
    doc = mongo.get_db().msg.find_one({"doc_id": f"{conv}:0"})
    assert doc is not None and doc["msgs"][2]["msg"] is None
    letters = eventually(lambda: entries_for("persist", {run[2]["client_msg_id"]}))
    assert "NUL" in letters[run[2]["client_msg_id"]].reason
    assert eventually(lambda: seq_users.get_user_seqs(f"pb{uid}", [conv]).get(conv, {}).get("read_seq") == 2)
    assert all(stack.core_alive().values()), stack.alive()


def test_push_routes_the_rest_of_a_batch_around_a_message_it_cannot_route(
    stack: Any, uid: str, clients: list[ImClient]
) -> None:
    sender, receiver = f"ua{uid}", f"ub{uid}"
    conv = single_conversation_id(sender, receiver)
    clients.append(login(stack, receiver))
    msgs = [text(sender, receiver, f"{sender}-{i}") | {"seq": i + 1, "status": 2} for i in range(3)]
    broken = {k: v for k, v in text(sender, receiver, f"{sender}-broken").items() if k != "session_type"}
    journal.send(push_batch, [{conv: [msgs[0], broken, *msgs[1:]]}], "push")

    assert sorted(drain_pushes(clients[0], 3)) == sorted(m["client_msg_id"] for m in msgs)
    letters = eventually(lambda: entries_for("push", {f"{sender}-broken"}))
    assert "session_type" in letters[f"{sender}-broken"].reason
    assert all(stack.core_alive().values()), stack.alive()


def test_hand_offs_journaled_in_one_round_trip_reach_push_and_persist_and_leave_no_entry(
    stack: Any, uid: str, clients: list[ImClient]
) -> None:
    """transfer's hand-off: push and persist journaled together (journal.send_many), then published."""
    sender, receiver = f"ha{uid}", f"hb{uid}"
    conv = single_conversation_id(sender, receiver)
    clients.append(login(stack, receiver))
    msgs = [text(sender, receiver, f"{sender}-{i}") | {"seq": i + 1, "status": 2} for i in range(3)]
    journal.send_many([(push_batch, [{conv: msgs}], "push"), (persist_batch, [[[conv, msgs]], []], "persist")])

    assert sorted(drain_pushes(clients[0], 3)) == sorted(m["client_msg_id"] for m in msgs)
    assert eventually(lambda: sorted(stored_client_msg_ids(conv)) == sorted(m["client_msg_id"] for m in msgs))

    def journaled(queue: str) -> set[str]:
        return {json.dumps(args) for _, args in journal.entries(queue, count=10_000) if sender in json.dumps(args)}

    assert eventually(lambda: not journaled("push") and not journaled("persist")), "journal entries left"


def test_the_journal_sweeper_parks_a_bad_hand_off_and_recovers_the_good_one_after_it(
    infra: dict[str, str], uid: str
) -> None:
    """The real persist task over the real journal: an entry that raises is parked in the dead
    letters with its reason and the sweep goes on; the hand-off journaled after it is written."""
    conv = single_conversation_id(f"ja{uid}", f"jb{uid}")
    good = [text(f"ja{uid}", f"jb{uid}", f"ja{uid}-0") | {"seq": 1, "status": 2}]
    bad_id = journal.append("persist", [[], [], None, "an argument too many"])
    good_id = journal.append("persist", [[[conv, good]], []])

    journal.sweep_once("persist", persist_batch, older_than_seconds=0)

    assert stored_client_msg_ids(conv) == [f"ja{uid}-0"]
    left = {entry_id for entry_id, _ in journal.entries("persist", count=10_000)}
    assert bad_id not in left and good_id not in left
    [parked] = [e for e in dead_letters.list_entries("journal", 1000) if e.details.get("journalEntry") == bad_id]
    assert "TypeError" in parked.reason and parked.payload == {
        "queue": "persist",
        "args": [[], [], None, "an argument too many"],
    }


def test_the_journal_sweeper_stops_on_an_outage_and_parks_nothing(infra: dict[str, str], uid: str) -> None:
    q = f"sweep-{uid}"
    entry_id = journal.append(q, [1])
    before = dead_letters.count("journal")

    def outage(*_: Any) -> None:
        raise RedisConnectionError("Redis is restarting")

    with pytest.raises(RedisConnectionError):
        journal.sweep_once(q, outage, older_than_seconds=0)
    assert [e for e, _ in journal.entries(q)] == [entry_id]
    assert dead_letters.count("journal") == before
    get_broker_redis().delete(journal_key(q))


def test_dead_letters_are_bounded(infra: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dead_letters, "MAX_ENTRIES", 20)
    get_redis().delete(dead_letters_key("offline"))
    ids = [
        dead_letters.put("offline", f"refused {i}", dead_letters.task_payload("offline", ["c", [], []]))
        for i in range(60)
    ]
    assert dead_letters.count("offline") == 20
    kept = [e.id for e in dead_letters.list_entries("offline", 100)]
    assert kept == ids[::-1][:20]  # the newest, newest first


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", "dead-letters", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_cli_lists_shows_redrives_and_drops(stack: Any, uid: str, clients: list[ImClient]) -> None:
    sender, receiver = f"ca{uid}", f"cb{uid}"
    conv = single_conversation_id(sender, receiver)
    clients.append(login(stack, receiver))
    doc = text(sender, receiver, f"{sender}-0")
    transfer_id = dead_letters.put(
        "transfer", "held for the test", dead_letters.transfer_payload([doc]), conversation=conv
    )
    other_conv = single_conversation_id(f"cc{uid}", f"cd{uid}")
    stored = text(f"cc{uid}", f"cd{uid}", f"cc{uid}-0") | {"seq": 1, "status": 2}
    persist_id = dead_letters.put(
        "persist",
        "held too",
        dead_letters.task_payload("persist", [[[other_conv, [stored]]], []]),
        conversation=other_conv,
    )

    listed = cli("list", "--limit", "1000")
    assert listed.returncode == 0, listed.stderr
    [line] = [row for row in listed.stdout.splitlines() if row.startswith(transfer_id)]
    assert "transfer" in line and conv in line and "held for the test" in line
    only_persist = cli("list", "--stage", "persist", "--limit", "1000").stdout
    assert persist_id in only_persist and transfer_id not in only_persist

    shown = cli("show", persist_id)
    assert (
        shown.returncode == 0
        and json.loads(shown.stdout)["payload"]["args"][0][0][1][0]["client_msg_id"] == f"cc{uid}-0"
    )

    # redrive: the transfer entry goes through transfer (pushed, stored), the persist one through persist
    assert cli("redrive", transfer_id).returncode == 0
    assert [m["clientMsgID"] for m in clients[0].pushed_msgs(1, timeout=30)] == [f"{sender}-0"]
    assert eventually(lambda: stored_client_msg_ids(conv) == [f"{sender}-0"])
    assert cli("redrive", persist_id).returncode == 0
    assert eventually(lambda: stored_client_msg_ids(other_conv) == [f"cc{uid}-0"])
    assert dead_letters.show(transfer_id) is None and dead_letters.show(persist_id) is None

    dropped_id = dead_letters.put("push", "to drop", None)
    assert cli("drop", dropped_id).returncode == 0 and dead_letters.show(dropped_id) is None
    for action in ("show", "redrive", "drop"):
        answer = cli(action, dropped_id)
        assert answer.returncode == 2 and "no dead letter with id" in answer.stderr, (action, answer.stderr)
    assert cli("show", "nonsense").returncode == 2
    unknown_stage = cli("show", "nope:1-0")
    assert unknown_stage.returncode != 0 and "unknown dead-letter stage" in unknown_stage.stderr

"""Transfer stage (OpenIM's msgtransfer): give each message its seq, cache it, hand off.

One task per batch that a gateway published for one shard. A shard queue has one consumer and a
batch is handled in acceptance order, so seq order within a conversation is acceptance order (P3).
Redis is touched in three pipelined round trips per batch, whatever the number of conversations:
probe (known clientMsgIDs), allocate (seq ranges), commit (one transaction: cache, clientMsgID
records, visible max seqs, read seqs). Outages are waited out inside the task, never by a Celery
retry to the back of the queue, which would reorder the conversation.

The unit of failure is one message (P7): each message is checked on its own before the commit
(app/core/quarantine.py) and one that fails is dead-lettered alone (app/pipeline/dead_letters.py). Should the batch
still fail, it is done again one conversation, then one message, at a time: commit recognises what
an earlier attempt committed by clientMsgID and hands it off again (P2, P5), and a conversation's
messages keep their order (P3). Only the message that fails on its own is dead-lettered.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import redis
from celery import bootsteps

from app.celery_app import celery_app
from app.config import settings
from app.core import classify, compact_json, quarantine
from app.core.constants import GROUP_CHAT, MSG_FROM_SYSTEM, MSG_STATUS_SUCCESS
from app.core.conversation import conversation_id_for
from app.ops import metrics
from app.pipeline import dead_letters
from app.pipeline import journal as hand_offs
from app.pipeline.backoff import TRANSIENT_ERRORS, until_done
from app.pipeline.shard_lease import LeaseLost
from app.seq_lua import seq_allocator
from app.store.mongo import conversations, seq_users
from app.store.redis import badges, msg_cache, scripts
from app.store.redis.client import get_broker_redis, get_redis
from app.store.redis.keys import (
    CLIENT_MSG_TTL_SECONDS,
    client_msg_key,
    conversation_ready_key,
)
from app.tasks.pace import FlushPace

log = logging.getLogger(__name__)

JSON = "application/json"

Msgs = list[dict[str, Any]]
ByConversation = dict[str, Msgs]
ReadSeq = tuple[str, str, int]  # (conversation, user, seq)

# Raised as they are, never blamed on a message: a lost lease (another worker replays the batch)
# and outages (waited out by until_done wherever they can occur).
NOT_THE_MESSAGES_FAULT: tuple[type[BaseException], ...] = (LeaseLost, *TRANSIENT_ERRORS)

# Called right before a batch's commit; raises (or exits) when this worker may no longer commit
# for its shards (app/pipeline/shard_lease.py on a Redis broker).
_commit_guard: Callable[[], None] | None = None

# The shard queues this worker alone consumes (it holds their lease, Redis broker): a delivered
# batch's run also takes the batches waiting there (take_queued_batches). Empty: no merging.
_merge_queues: list[str] = []

# How far apart the gateways' flushes reach this worker: a busy run waits for the next (pace.py).
_pace = FlushPace()
LINGER_POLL_SECONDS = 0.002  # how often a waiting run looks into its queues once the flush is due

Journal = list[str]  # [queue, journal entry id] of a gateway batch (Redis broker)
Batch = tuple[Any, Journal | None]  # (the broker message's msgs, its journal entry)


def guard_commits(check: Callable[[], None] | None) -> None:
    global _commit_guard
    _commit_guard = check


def merge_from(queues: list[str]) -> None:
    """Let runs take the batches waiting in `queues`: only for a worker that holds their lease, so
    nothing else pops them and every one of them is journaled (the journal keeps what we pop)."""
    global _merge_queues
    _merge_queues = list(queues) if hand_offs.JOURNALING and settings.transfer_merge_max > 1 else []


def group_by_conversation(msgs: Msgs) -> ByConversation:
    """Split a batch per conversation, keeping each conversation's acceptance order."""
    grouped: ByConversation = {}
    for msg in msgs:
        conv = conversation_id_for(msg["session_type"], msg["send_id"], msg["recv_id"], msg["group_id"])
        grouped.setdefault(conv, []).append(msg)
    return grouped


def conversation_owners(msg: dict[str, Any]) -> list[str]:
    """Who gets a conversation record on its first message; groups make their members' records."""
    if msg["session_type"] == GROUP_CHAT:
        return []
    return sorted({msg["send_id"], msg["recv_id"]} - {""})


def close_leavers_windows(committed: ByConversation) -> None:
    """Members named as leaving on a group notification read up to its seq and no further."""
    for conv, msgs in committed.items():
        for msg in msgs:
            leaving = classify.leaving_users(msg)
            if leaving and msg.get("seq"):
                seq_users.set_member_seq_bounds(conv, leaving, min_seq=None, max_seq=int(msg["seq"]))


def split_known(msgs: Msgs, known: list[str | None]) -> tuple[Msgs, dict[int, dict[str, Any]]]:
    """(messages needing a seq, seq -> message for clientMsgIDs that already have one).

    The same clientMsgID twice in one batch keeps only its first occurrence (P2)."""
    fresh: Msgs = []
    repeated: dict[int, dict[str, Any]] = {}
    seen: set[str] = set()
    for msg, seq in zip(msgs, known, strict=True):
        if seq is not None:
            repeated[int(seq)] = msg
        elif msg["client_msg_id"] not in seen:
            seen.add(msg["client_msg_id"])
            fresh.append(msg)
    return fresh, repeated


@dataclass
class CommitResult:
    committed: ByConversation = field(default_factory=dict)  # everything to push, per conversation
    runs: list[tuple[str, Msgs]] = field(default_factory=list)  # what to persist, each run contiguous
    read_seqs: list[ReadSeq] = field(default_factory=list)


def commit_batch(by_conv: ByConversation, attempts: int = 3) -> CommitResult:
    """Allocate seqs and make the messages readable; returns them per conversation in seq order."""
    r = get_redis()
    convs = list(by_conv)

    # One script per conversation looks up which clientMsgIDs have their seqs already and whether
    # its records exist, and allocates seqs for the others (P2: a repeat gets no second seq); a
    # conversation without records gets its seqs once they were created.
    wants = [
        (conv, [m["client_msg_id"] for m in by_conv[conv]], by_conv[conv][0]["session_type"] == GROUP_CHAT)
        for conv in convs
    ]
    probed = seq_allocator().malloc_unrecorded_many(wants, client_msg_key, conversation_ready_key)

    fresh: ByConversation = {}
    repeated: dict[str, dict[int, dict[str, Any]]] = {}
    missing_records: dict[str, tuple[list[str], int]] = {}
    for conv in convs:
        fresh[conv], repeated[conv] = split_known(by_conv[conv], probed[conv].known)
        if not probed[conv].flagged:
            first = by_conv[conv][0]
            missing_records[conv] = (conversation_owners(first), first["session_type"])
    if missing_records:
        conversations.create_conversations_many(missing_records)
    starts = {conv: p.start for conv, p in probed.items() if p.start is not None}
    late = [(c, len(m), m[0]["session_type"] == GROUP_CHAT) for c, m in fresh.items() if m and c not in starts]
    if late:
        starts.update(seq_allocator().malloc_many(late))

    commit = scripts.pipeline(r)  # commit.lua and SETs: safe to run again after NOSCRIPT
    reads: dict[str, dict[str, int]] = {}
    for conv, start in starts.items():
        msgs = fresh[conv]
        read = reads[conv] = {}
        for i, msg in enumerate(msgs):
            msg["seq"] = start + i + 1
            msg["status"] = MSG_STATUS_SUCCESS
            read[msg["send_id"]] = msg["seq"]  # a sender has read its own messages
        metrics.SEQS_ALLOCATED.inc(len(msgs))
        msg_cache.commit(conv, msgs, read, client=commit)
    for conv in convs:
        if conv not in starts:  # only repeats: still mark the conversation's records as created
            commit.set(conversation_ready_key(conv), 1, ex=CLIENT_MSG_TTL_SECONDS)
    if _commit_guard is not None:
        _commit_guard()
    replies = commit.execute()
    refused = [conv for conv, reply in zip(starts, replies, strict=False) if reply == msg_cache.COMMIT_REFUSED]

    result = CommitResult()
    for conv in convs:
        if conv in refused:
            continue
        out = list(fresh[conv]) if conv in starts else []
        if out:
            result.runs.append((conv, list(out)))  # one allocation: contiguous by construction
            result.read_seqs.extend((conv, user_id, seq) for user_id, seq in reads[conv].items())
        if repeated[conv]:
            # Re-hand-off what the cache still holds: a redelivered batch may have died before its
            # hand-off. Older repeats were persisted long ago.
            cached = msg_cache.get_cached_msgs(conv, repeated[conv].keys())
            for seq in sorted(cached):
                result.runs.append((conv, [cached[seq]]))
                out.append(cached[seq])
        if out:
            result.committed[conv] = sorted(out, key=lambda m: m["seq"])
    if refused:
        # Another worker committed some of these clientMsgIDs after our probe (one that took over
        # our shards while we stalled): our seqs stay unused (placeholders); theirs are the answer.
        log.warning("commit refused for %d conversations: clientMsgIDs committed meanwhile", len(refused))
        if attempts <= 1:
            raise RuntimeError(f"commit kept being refused for {','.join(refused)}")
        again = commit_batch({conv: by_conv[conv] for conv in refused}, attempts - 1)
        result.committed.update(again.committed)
        result.runs.extend(again.runs)
        result.read_seqs.extend(again.read_seqs)
    return result


def apply_read_receipts(receipts: ByConversation) -> list[ReadSeq]:
    """Move each reader's read seq forward (never back, never past the visible max)."""
    wanted: dict[tuple[str, str], int] = {}
    for conv, msgs in receipts.items():
        for msg in msgs:
            if msg.get("msg_from") == MSG_FROM_SYSTEM:
                continue  # the server's receipts (REST mark-as-read) report a read seq it already moved
            try:
                seq = classify.read_receipt_seq(msg["content"])
            except ValueError:
                log.warning(
                    "ignoring malformed read receipt %s in %s",
                    msg["client_msg_id"],
                    conv,
                    extra={"conversationID": conv, "clientMsgID": msg["client_msg_id"]},
                )
                continue
            key = (conv, msg["send_id"])
            wanted[key] = max(seq, wanted.get(key, 0))
    if not wanted:
        return []
    pipe = get_redis().pipeline(transaction=False)
    for (conv, user_id), seq in wanted.items():
        msg_cache.raise_read_seq(conv, user_id, seq, pipe)
    for conv, user_id in wanted:
        badges.read(user_id, conv, pipe)  # the reader's unread badge loses this conversation's part
    raised = pipe.execute()[: len(wanted)]
    return [(conv, user, int(seq)) for (conv, user), seq in zip(wanted, raised, strict=True)]


def dead_letter(msg: Any, reason: str, error: BaseException | None = None) -> None:
    """Keep one message transfer cannot handle, with its reason (waits out a Redis outage)."""
    try:
        conv = conversation_id_for(msg["session_type"], msg["send_id"], msg["recv_id"], msg["group_id"])
    except Exception:  # unroutable: that may be the very reason
        conv = ""
    client_msg_id = msg.get("client_msg_id") if isinstance(msg, dict) else None
    until_done(
        partial(
            dead_letters.put,
            "transfer",
            reason,
            dead_letters.transfer_payload([msg]),
            conversation=conv,
            error=error,
            details={"clientMsgID": client_msg_id} if isinstance(client_msg_id, str) else None,
        ),
        "dead letter",
    )


def quarantine_batch(msgs: list[Any]) -> Msgs:
    """The messages transfer can handle; every other one is dead-lettered alone, before the commit."""
    good: Msgs = []
    for msg in msgs:
        reason = quarantine.problem_with(msg)
        if reason is None:
            good.append(msg)
        else:
            dead_letter(msg, reason)
    return good


def first_of_each_client_msg_id(msgs: Msgs) -> Msgs:
    """As split_known does within one batch: a clientMsgID repeated is handled once (P2)."""
    seen: set[str] = set()
    out: Msgs = []
    for msg in msgs:
        if msg["client_msg_id"] not in seen:
            seen.add(msg["client_msg_id"])
            out.append(msg)
    return out


def process_batch(msgs: list[Any]) -> int:
    """The whole transfer of one batch, each message a unit of failure of its own (P7). Safe to repeat (P2)."""
    good = quarantine_batch(msgs)
    if not good:
        return 0
    try:
        return process_checked(good)
    except NOT_THE_MESSAGES_FAULT:
        raise
    except Exception as exc:
        log.warning("transfer batch of %d failed (%r): once more one conversation at a time", len(good), exc)
    return sum(process_conversation(conv, msgs) for conv, msgs in group_by_conversation(good).items())


def process_conversation(conv: str, msgs: Msgs) -> int:
    """One conversation's messages together, else one by one in acceptance order (P3)."""
    try:
        return process_checked(msgs)
    except NOT_THE_MESSAGES_FAULT:
        raise
    except Exception as exc:
        log.warning(
            "transfer of %d messages failed (%r): once more one at a time",
            len(msgs),
            exc,
            extra={"conversationID": conv},
        )
    done = 0
    for msg in first_of_each_client_msg_id(msgs):
        try:
            done += process_checked([msg])
        except NOT_THE_MESSAGES_FAULT:
            raise
        except Exception as exc:
            log.exception("transfer of %s failed", msg["client_msg_id"], extra={"conversationID": conv})
            dead_letter(msg, f"transfer failed: {exc!r}"[:300], exc)
    return done


def process_checked(msgs: Msgs) -> int:
    """Classify, commit, hand off messages that passed quarantine; raises what it cannot handle."""
    by_conv = group_by_conversation(msgs)
    stored: ByConversation = {}
    ephemeral: ByConversation = {}
    receipts: ByConversation = {}
    for conv, conv_msgs in by_conv.items():
        for msg in conv_msgs:
            if classify.is_stored(msg):
                stored.setdefault(conv, []).append(msg)
            else:
                msg["seq"] = 0
                ephemeral.setdefault(conv, []).append(msg)
                if classify.is_read_receipt(msg):
                    receipts.setdefault(conv, []).append(msg)
    result = until_done(partial(commit_batch, stored), "commit batch") if stored else CommitResult()
    if receipts:
        result.read_seqs.extend(until_done(partial(apply_read_receipts, receipts), "read receipts"))
    if any(classify.leaving_users(m) for msgs in result.committed.values() for m in msgs):
        until_done(partial(close_leavers_windows, result.committed), "close leavers' read windows")
    until_done(partial(hand_off, result, ephemeral), "hand off to persist and push")
    if log.isEnabledFor(logging.DEBUG):
        for conv, msgs in result.committed.items():
            seqs = [m["seq"] for m in msgs]
            log.debug("committed %d", len(msgs), extra={"conversationID": conv, "seq": f"{seqs[0]}-{seqs[-1]}"})
    return sum(len(m) for m in result.committed.values())


@celery_app.task(name="transfer.batch", acks_late=True)
def transfer_batch(msgs: Msgs, journal: list[str] | None = None) -> int:
    """`journal` is [queue, entry id] when the gateway journaled the batch (Redis broker). A batch
    the worker received from the broker also takes the batches waiting behind it into its run and,
    where TRANSFER_LINGER_MAX_MS lets a busy run wait, the gateways' next flush."""
    waiting: list[Batch] = []
    if _merge_queues and journal and transfer_batch.request.delivery_info:
        _pace.seen(time.monotonic())
        waiting = take_queued_batches()
        size = sum(len(m) if isinstance(m, list) else 1 for m, _ in [(msgs, journal), *waiting])
        # one flush holds a batch per shard at most: more waiting means this worker fell behind
        waiting += take_next_flush(size, behind=len(waiting) >= len(_merge_queues))
    count = transfer_many([(msgs, journal), *waiting]) if waiting else transfer_one(msgs, journal)
    reserve_seq_blocks_ahead()
    return count


def reserve_seq_blocks_ahead() -> None:
    """After a run, off its messages' way: the next seq blocks of conversations running low."""
    try:
        seq_allocator().reserve_ahead()
    except Exception:  # they take theirs from MongoDB when they run out, as without this
        log.warning("reserving seq blocks ahead failed", exc_info=True)


def transfer_one(msgs: Any, journal: Journal | None) -> int:
    if not isinstance(msgs, list):
        msgs = [msgs]  # not a batch at all: quarantine refuses it as one unreadable message
    try:
        count = process_batch(msgs)
    except LeaseLost:
        raise  # another worker consumes the shard now and replays this batch from the journal
    except Exception as exc:
        # process_batch isolates each message's failure; this is a bug in that isolation. Keep
        # every message for an operator, each on its own, rather than block the shard forever.
        log.exception("transfer batch failed; its %d messages are dead-lettered", len(msgs))
        for msg in msgs:
            dead_letter(msg, f"transfer batch failed: {exc!r}"[:300], exc)
        hand_offs.done(journal)
        raise
    hand_offs.done_later([journal])
    return count


def transfer_many(batches: list[Batch]) -> int:
    """Several gateway batches as one run (one allocation, one commit, one hand-off), in the order
    given: a conversation's batches all come from its shard's queue, taken in queue order, so its
    order holds (P3). Should the run fail for a reason that is not the messages' (outages are waited
    out inside), each batch goes again on its own, as it would have unmerged (P2 recognises what
    the merged run committed)."""
    flat: Msgs = [m for msgs, _ in batches for m in (msgs if isinstance(msgs, list) else [msgs])]
    try:
        count = process_batch(flat)
    except LeaseLost:
        raise
    except Exception:
        log.exception("merged transfer of %d batches failed: once more one batch at a time", len(batches))
        count = 0
        for msgs, journal in batches:
            try:
                count += transfer_one(msgs, journal)
            except LeaseLost:
                raise
            except Exception:  # transfer_one dead-lettered its messages and removed its entry
                continue
    hand_offs.done_later([j for _, j in batches])
    return count


def take_queued_batches() -> list[Batch]:
    """Pop up to TRANSFER_MERGE_MAX gateway batches waiting in each of this worker's shard queues,
    oldest first. Safe because this worker alone consumes them (lease) and kombu has no BRPOP
    outstanding while the solo pool runs a task: what we pop is the next in each queue, and its
    journal entry stays until the run handed it off (a worker killed meanwhile: the next holder
    replays the journal). A message that is not a plain journaled transfer.batch goes back, with
    everything behind it, to the consuming end of its queue for kombu, in its order. The journal
    entries of earlier runs still to be removed go along (one round trip for both)."""
    r = get_broker_redis()
    pipe = r.pipeline(transaction=False)
    removals = hand_offs.later_removals.queue_on(pipe)
    for queue in _merge_queues:
        pipe.rpop(queue, settings.transfer_merge_max)
    try:
        replies = pipe.execute(raise_on_error=False)
    except TRANSIENT_ERRORS:
        hand_offs.later_removals.give_back(removals)
        return []  # the broker is away: this batch runs alone; the rest wait in their queues
    removed, popped = replies[: len(replies) - len(_merge_queues)], replies[len(replies) - len(_merge_queues) :]
    hand_offs.later_removals.check(removals, removed)
    if any(isinstance(reply, redis.ResponseError) for reply in popped):  # RPOP with a count needs Redis 6.2
        log.warning("the broker's Redis cannot pop several messages at once: transfer runs one batch at a time")
        merge_from([])
    taken: list[Batch] = []
    for queue, raws in zip(_merge_queues, popped, strict=True):
        raws = [] if isinstance(raws, Exception) else list(raws or [])
        for i, raw in enumerate(raws):
            batch = queued_batch(raw)
            if batch is None:
                until_done(partial(r.rpush, queue, *reversed(raws[i:])), "give back queued batches")
                break
            taken.append(batch)
    return taken


def take_next_flush(messages: int, behind: bool) -> list[Batch]:
    """The batches of the gateways' next flush, should a run of `messages` wait for them
    (TRANSFER_LINGER_*, pace.py): it sleeps until the flush is due at the last gap's pace and then
    looks every few milliseconds, up to TRANSFER_LINGER_MAX_MS in all. Empty when it does not wait
    or nothing came: the run goes on with what it has."""
    wait = _pace.linger(messages, behind, settings.transfer_linger_max_ms / 1000, settings.transfer_linger_min_messages)
    if wait <= 0:
        return []
    now = time.monotonic()
    deadline = now + wait
    due = _pace.next_due() or now
    wake = min(deadline, max(now, due - LINGER_POLL_SECONDS))
    while True:
        pause = wake - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        taken = take_queued_batches()
        if taken:
            _pace.seen(time.monotonic())
            return taken
        now = time.monotonic()
        if now >= deadline:
            return []
        wake = min(deadline, now + LINGER_POLL_SECONDS)


def queued_batch(raw: str | bytes) -> Batch | None:
    """(msgs, journal) of a kombu Redis message holding a journaled transfer.batch call; else None."""
    try:
        envelope = compact_json.loads(raw)
        headers, props = envelope["headers"], envelope["properties"]
        if headers.get("task") != "transfer.batch" or headers.get("eta") or envelope.get("content-type") != JSON:
            return None
        body = envelope["body"]
        if props.get("body_encoding") == "base64":  # kombu's own publish (a gateway of an older version)
            body = base64.b64decode(body)
        args, kwargs, _embed = compact_json.loads(body)
        journal = kwargs.get("journal")
        if len(args) != 1 or set(kwargs) != {"journal"} or not hand_offs.is_entry(journal):
            return None
        return args[0], journal
    except Exception:  # anything unexpected is left to kombu and the task as they are
        return None


def replay_journal(queues: list[str]) -> int:
    """Before consuming shards it just took over: finish every batch journaled until now, in order.
    Batches that were in fact committed are recognised by clientMsgID and not committed twice.
    Batches journaled after this moment are still in the queue: replaying them too would chase the
    live stream."""
    try:  # our own finished batches are not replayed
        hand_offs.later_removals.flush()
    except TRANSIENT_ERRORS:
        pass  # replayed then, and recognised (P2)
    replayed = 0
    for queue in queues:
        last = hand_offs.last_id(queue)
        if last is None:
            continue
        while entries := hand_offs.entries(queue, until=last):
            for entry_id, msgs in entries:
                transfer_batch(msgs, [queue, entry_id])
                replayed += 1
            # their removal waits for nothing here: the next read of the journal must not find them
            until_done(hand_offs.later_removals.flush, "journal")
    return replayed


def journal_replay_step(queues: list[str]) -> type[bootsteps.StartStopStep]:
    """A consumer bootstep (Redis broker) that replays `queues`' journal each time the worker's
    consumer starts: at start, and again after every reconnection to the broker, before the event
    loop consumes anything. kombu's Redis transport pops a batch (BRPOP) before it records it as
    unacknowledged, so a batch popped while the broker went away is in neither the queue nor the
    unacknowledged set; only the journal still has it (seen in the fault suite's broker restart)."""

    class ReplayJournal(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = {"celery.worker.consumer.tasks:Tasks"}  # consumers declared, nothing consumed yet

        def start(self, parent: Any) -> None:
            replayed = replay_journal(queues)
            if replayed:
                log.warning("replayed %d journaled batches left by a previous consumer or connection", replayed)

    return ReplayJournal


def hand_off(result: CommitResult, ephemeral: ByConversation) -> None:
    from app.tasks.persist import persist_batch
    from app.tasks.push import push_batch

    sends: list[tuple[Any, list[Any], str]] = []
    to_push: ByConversation = {c: list(m) for c, m in result.committed.items()}
    for conv, msgs in ephemeral.items():
        to_push.setdefault(conv, []).extend(msgs)
    if to_push:  # push first: the hot path
        sends.append((push_batch, [to_push], "push"))
    if result.runs or result.read_seqs:
        sends.append((persist_batch, [[[conv, msgs] for conv, msgs in result.runs], result.read_seqs], "persist"))
    hand_offs.send_many(sends)

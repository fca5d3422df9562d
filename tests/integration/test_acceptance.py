"""The gateway's acceptance of a batch against the real Redis: reservations, resends, publish failures."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.core import recv_opts as recv_opts_rules
from app.core.constants import SINGLE_CHAT, TEXT
from app.core.conversation import single_conversation_id
from app.core.errors import ARGS_ERROR, ImError
from app.store.mongo import client as mongo
from app.store.mongo import conversations, users
from app.store.redis import client_acks, recv_opts
from app.store.redis.client import get_redis
from app.store.redis.keys import client_ack_key
from app.ws import recv_rules
from app.ws.acceptance import (
    Ack,
    Confirmed,
    LaterSettlements,
    Pending,
    Released,
    Settle,
    accept_batches,
    decode_ack,
    encode_ack,
    settle,
)
from app.ws.publish import accept_shard_batches


def pending(conv: str, cid: str, server_msg_id: str) -> Pending:
    return Pending(conv, cid, Ack(server_msg_id, 1000), {"client_msg_id": cid, "server_msg_id": server_msg_id})


def reserve(batch: list[Pending]) -> list[str | None]:
    return client_acks.reserve_client_acks(
        [(p.conversation_id, p.client_msg_id, encode_ack(p.ack, False)) for p in batch]
    )


def accept_batch(
    batch: list[Pending],
    publish: Callable[[list[dict[str, Any]]], None],
    settle_later: Settle | None = None,
) -> list[Ack | Exception]:
    """One batch, reserved here, through `accept_batches`; `publish` raises to fail it."""

    def publish_one(docs: dict[int, list[dict[str, Any]]]) -> dict[int, Exception]:
        publish(docs[0])
        return {}

    return accept_batches({0: batch}, publish_one, {0: reserve(batch)}, settle_later)[0]


def test_resend_gets_the_first_answer_and_is_not_published_again(infra: dict[str, str], uid: str) -> None:
    published: list[list[dict[str, Any]]] = []
    conv = f"si_acc{uid}_x"
    first = accept_batch([pending(conv, "c1", "s1"), pending(conv, "c1", "s1-dup")], published.append)
    assert first == [Ack("s1", 1000), Ack("s1", 1000)]  # the in-batch copy is answered as the first
    assert [[d["client_msg_id"] for d in batch] for batch in published] == [["c1"]]
    again = accept_batch([pending(conv, "c1", "s2")], published.append)
    assert again == [Ack("s1", 1000)]
    assert len(published) == 1


def test_failed_publish_fails_every_copy_and_frees_the_clientmsgid(infra: dict[str, str], uid: str) -> None:
    conv = f"si_acc{uid}_y"
    accept_batch([pending(conv, "done", "s0")], lambda docs: None)

    def broker_down(docs: list[dict[str, Any]]) -> None:
        raise ConnectionError("broker gone")

    answers = accept_batch(
        [pending(conv, "c2", "s1"), pending(conv, "c2", "s1-dup"), pending(conv, "done", "s9")], broker_down
    )
    assert isinstance(answers[0], ConnectionError) and isinstance(answers[1], ConnectionError)
    assert answers[2] == Ack("s0", 1000)  # already accepted earlier: not part of the failed publish
    published: list[list[dict[str, Any]]] = []
    assert accept_batch([pending(conv, "c2", "s3")], published.append) == [Ack("s3", 1000)]
    assert len(published) == 1


def test_shards_are_published_together_and_a_failed_shard_frees_only_its_own(infra: dict[str, str], uid: str) -> None:
    convs = {shard: f"si_acc{uid}_s{shard}" for shard in range(3)}
    batches = {
        shard: [pending(conv, "c1", f"s{shard}"), pending(conv, "c2", f"t{shard}")] for shard, conv in convs.items()
    }
    existing = {shard: reserve(batch) for shard, batch in batches.items()}
    calls: list[dict[int, list[str]]] = []

    def shard_1_down(docs: dict[int, list[dict[str, Any]]]) -> dict[int, Exception]:
        calls.append({shard: [d["server_msg_id"] for d in shard_docs] for shard, shard_docs in docs.items()})
        return {1: ConnectionError("shard 1's publish failed")}

    deferred: list[tuple[list[Confirmed], list[Released]]] = []
    answers = accept_batches(batches, shard_1_down, existing, settle_later=lambda c, r: deferred.append((c, r)))
    assert calls == [{0: ["s0", "t0"], 1: ["s1", "t1"], 2: ["s2", "t2"]}]  # one publish for every shard
    assert answers[0] == [Ack("s0", 1000), Ack("t0", 1000)] and answers[2] == [Ack("s2", 1000), Ack("t2", 1000)]
    assert all(isinstance(a, ConnectionError) for a in answers[1])
    assert reservation(convs[1], "c1") is None and reservation(convs[1], "c2") is None  # its clients resend
    assert reservation(convs[0], "c1") == (Ack("s0", 1000), False)  # confirmed later, in one settle
    assert len(deferred) == 1
    settle(*deferred[0])
    assert [reservation(convs[shard], "c2") for shard in (0, 2)] == [(Ack("t0", 1000), True), (Ack("t2", 1000), True)]


def reservation(conv: str, cid: str) -> tuple[Ack, bool] | None:
    raw = get_redis().get(client_ack_key(conv, cid))
    return None if raw is None else decode_ack(str(raw))


def test_answers_come_before_the_confirmation_and_a_resend_meanwhile_is_published_again(
    infra: dict[str, str], uid: str
) -> None:
    conv = f"si_acc{uid}_z"
    published: list[list[dict[str, Any]]] = []
    deferred: list[tuple[list[Confirmed], list[Released]]] = []
    assert accept_batch(
        [pending(conv, "c1", "s1")], published.append, settle_later=lambda c, r: deferred.append((c, r))
    ) == [Ack("s1", 1000)]
    assert reservation(conv, "c1") == (Ack("s1", 1000), False) and len(deferred) == 1
    # a resend before the confirmation: published again under the first answer (transfer dedupes)
    assert accept_batch([pending(conv, "c1", "s2")], published.append) == [Ack("s1", 1000)]
    assert [[d["server_msg_id"] for d in batch] for batch in published] == [["s1"], ["s1"]]
    settle(*deferred[0])
    assert reservation(conv, "c1") == (Ack("s1", 1000), True)
    assert accept_batch([pending(conv, "c1", "s3")], published.append) == [Ack("s1", 1000)]
    assert len(published) == 2  # confirmed: answered, not published again


def test_a_refused_message_does_not_keep_its_reservation(infra: dict[str, str], uid: str) -> None:
    alice, bob = f"alice{uid}", f"bob{uid}"
    conv = single_conversation_id(alice, bob)
    recv_opts.fill_many({bob: (recv_opts_rules.RECEIVE, {conv: recv_opts_rules.NOT_RECEIVE})})
    doc = {"session_type": SINGLE_CHAT, "send_id": alice, "recv_id": bob, "content_type": TEXT, "msg_from": 100}
    refused = Pending(conv, "r1", Ack("s1", 1000), dict(doc))
    timers: list[Callable[[], None]] = []
    settlements = LaterSettlements(0.0, lambda _delay, fn: timers.append(fn))
    [answer] = accept_shard_batches({0: [refused]}, settlements)[0]
    assert isinstance(answer, ImError) and answer.code == ARGS_ERROR
    assert reservation(conv, "r1") == (Ack("s1", 1000), False)  # taken in the batch's one round trip
    assert len(timers) == 1
    timers.pop()()
    # released: a resend is decided again (and, once bob receives, published under a new answer)
    assert reservation(conv, "r1") is None


def test_receivers_options_missing_from_the_cache_are_loaded_together_and_cached(
    infra: dict[str, str], uid: str
) -> None:
    alice, bob, carol, dave = (f"{name}{uid}" for name in ("alice", "bob", "carol", "dave"))
    convs = {user: single_conversation_id(alice, user) for user in (bob, carol, dave)}
    conversations.create_conversations_many({c: ([alice, user], SINGLE_CHAT) for user, c in convs.items()})
    assert conversations.set_recv_msg_opt(bob, convs[bob], recv_opts_rules.NOT_RECEIVE)
    assert conversations.set_recv_msg_opt(dave, convs[dave], recv_opts_rules.RECEIVE_NOT_NOTIFY)
    users.register_users([(user, {"nickname": user}) for user in (bob, carol, dave)], now_ms=1)
    assert users.set_global_recv_msg_opt(carol, recv_opts_rules.RECEIVE_NOT_NOTIFY)
    pairs = sorted((user, conv) for user, conv in convs.items())
    assert all(found is None for found in read_cached(pairs).values())

    options = recv_rules.receiver_options(pairs, read_cached(pairs))

    expected = {
        (bob, convs[bob]): (recv_opts_rules.RECEIVE, recv_opts_rules.NOT_RECEIVE),
        (carol, convs[carol]): (recv_opts_rules.RECEIVE_NOT_NOTIFY, recv_opts_rules.RECEIVE),
        (dave, convs[dave]): (recv_opts_rules.RECEIVE, recv_opts_rules.RECEIVE_NOT_NOTIFY),
    }
    assert options == expected
    assert read_cached(pairs) == expected  # each user's options cached, complete


def read_cached(pairs: list[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int] | None]:
    pipe = get_redis().pipeline(transaction=False)
    recv_opts.queue_cached(pipe, pairs)
    return recv_opts.parse_cached(pairs, pipe.execute())


def test_conversation_records_are_created_once_and_never_overwritten(infra: dict[str, str], uid: str) -> None:
    alice, bob, carol = f"alice{uid}", f"bob{uid}", f"carol{uid}"
    conv = single_conversation_id(alice, bob)
    conversations.create_conversations_many({conv: ([alice, bob], SINGLE_CHAT)})
    assert conversations.set_recv_msg_opt(bob, conv, recv_opts_rules.NOT_RECEIVE)
    # again (a redelivered batch, another transfer worker), with a new record beside the existing ones
    other = single_conversation_id(alice, carol)
    conversations.create_conversations_many({conv: ([alice, bob], SINGLE_CHAT), other: ([alice, carol], SINGLE_CHAT)})
    records = list(mongo.get_db().conversation.find({"conversation_id": {"$in": [conv, other]}}, {"_id": 0}))
    assert sorted((r["conversation_id"], r["owner_user_id"], r["recv_msg_opt"]) for r in records) == sorted(
        [
            (conv, alice, recv_opts_rules.RECEIVE),
            (conv, bob, recv_opts_rules.NOT_RECEIVE),  # bob's choice kept
            (other, alice, recv_opts_rules.RECEIVE),
            (other, carol, recv_opts_rules.RECEIVE),
        ]
    )


def test_later_settlements_go_first_in_the_next_flushs_round_trip_or_alone_once_due(
    infra: dict[str, str], uid: str
) -> None:
    conv = f"si_acc{uid}_later"
    timers: list[tuple[float, Callable[[], None]]] = []
    settlements = LaterSettlements(60.0, lambda delay, fn: timers.append((delay, fn)))
    reserve([pending(conv, "c1", "s1"), pending(conv, "gone", "s2")])
    settlements.add([(conv, "c1", encode_ack(Ack("s1", 1000), True))], [(conv, "gone")])
    assert [delay for delay, _fn in timers] == [60.0]
    # the next flush's round trip: the settlements first, so its reservation of a resend of c1 finds c1 final
    pipe = get_redis().pipeline(transaction=False)
    skip = settlements.queue_on(pipe)
    client_acks.queue_reserve(pipe, [(conv, "c1", encode_ack(Ack("s9", 2000), False))])
    assert skip == 2
    [found] = client_acks.reserved(pipe.execute()[skip:])
    assert found is not None and decode_ack(found) == (Ack("s1", 1000), True)
    assert reservation(conv, "gone") is None
    # the timer finds nothing left and does nothing
    timers.pop()[1]()
    assert timers == []
    # added again: not due yet when its timer fires, so the timer waits the rest of the delay
    settlements.add([(conv, "c3", encode_ack(Ack("s3", 1000), True))], [])
    timers.pop()[1]()
    assert reservation(conv, "c3") is None and len(timers) == 1 and 0 < timers[0][0] <= 60.0
    settlements.delay_seconds = 0.0  # once due, written on their own
    timers.pop()[1]()
    assert reservation(conv, "c3") == (Ack("s3", 1000), True) and timers == []
    # and at once when the gateway shuts down
    settlements.add([(conv, "c4", encode_ack(Ack("s4", 1000), True))], [])
    settlements.flush()
    assert reservation(conv, "c4") == (Ack("s4", 1000), True)

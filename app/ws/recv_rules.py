"""Receivers' receive options applied to a batch of single-chat messages before it is accepted
(app/core/recv_opts.py decides; options come from the Redis cache, read in the same round trip as
the batch's clientMsgID reservations (app/ws/publish.py), reloaded from MongoDB for a user whose
options are not cached)."""

from __future__ import annotations

import logging
import time

from app.core import classify
from app.core.constants import SINGLE_CHAT
from app.core.errors import ARGS_ERROR, ImError
from app.core.recv_opts import Decision, single_chat_decision
from app.store.mongo import conversations, users
from app.store.redis import recv_opts
from app.ws.acceptance import Pending

log = logging.getLogger(__name__)

OUTAGE_BACKOFF_SECONDS = 10.0
_skip_until = 0.0

REFUSED = "message is not sent: the receiver does not receive messages of this conversation"


def single_chat_pairs(batch: list[Pending]) -> list[tuple[str, str]]:
    """The (receiver, conversation) pairs whose options decide the batch's single-chat messages."""
    return sorted(
        {
            (p.doc["recv_id"], p.conversation_id)
            for p in batch
            if p.doc.get("session_type") == SINGLE_CHAT and p.doc.get("recv_id") != p.doc.get("send_id")
        }
    )


def receiver_options(
    pairs: list[tuple[str, str]], found: dict[tuple[str, str], tuple[int, int] | None]
) -> dict[tuple[str, str], tuple[int, int]]:
    """(receiver, conversation) -> (global option, conversation option), from what the Redis cache
    held (`found`, read in the gateway's one round trip per batch) and MongoDB for the rest.

    A MongoDB outage must not stop sending: receivers whose options cannot be loaded are taken to
    receive (as by default) for a while, and not cached."""
    global _skip_until
    found = dict(found)
    missing = sorted({user_id for (user_id, _), opts in found.items() if opts is None})
    if missing and time.monotonic() >= _skip_until:
        try:
            global_opts = users.global_recv_msg_opts(missing)
            loaded = conversations.recv_msg_opts_of(missing)
        except Exception as exc:
            _skip_until = time.monotonic() + OUTAGE_BACKOFF_SECONDS
            log.warning("receive options unavailable for %.0f s (%r): delivering", OUTAGE_BACKOFF_SECONDS, exc)
            loaded = {}
        if loaded:
            recv_opts.fill_many({user_id: (global_opts[user_id], opts) for user_id, opts in loaded.items()})
        for pair in pairs:
            if pair[0] in loaded:
                found[pair] = (global_opts[pair[0]], loaded[pair[0]].get(pair[1], 0))
    return {pair: opts for pair, opts in found.items() if opts is not None}


def decide(batch: list[Pending], options: dict[tuple[str, str], tuple[int, int]]) -> list[ImError | None]:
    """Per message: the error that refuses it, or None (its offlinePush option switched off where the
    receiver asked for no notifications)."""
    out: list[ImError | None] = []
    for p in batch:
        opts = options.get((p.doc.get("recv_id", ""), p.conversation_id))
        if opts is None or p.doc.get("session_type") != SINGLE_CHAT:
            out.append(None)
            continue
        decision = single_chat_decision(
            opts[0], opts[1], int(p.doc.get("content_type", 0)), int(p.doc.get("msg_from", 0))
        )
        if decision is Decision.REFUSE:
            out.append(ImError(ARGS_ERROR, REFUSED))
            continue
        if decision is Decision.NO_OFFLINE_PUSH:
            p.doc["options"] = {**(p.doc.get("options") or {}), classify.OPT_OFFLINE_PUSH: False}
        out.append(None)
    return out

"""The `conversation` collection: one record per owner and conversation (OpenIM's model). A record
is what lets a user read a conversation, and it holds the owner's receive option (recvMsgOpt)."""

from __future__ import annotations

from typing import Any

from app.core.recv_opts import RECEIVE as RECV_AND_NOTIFY
from app.core.recv_opts import RECV_MSG_OPTS
from app.store.mongo.bulk import insert_once
from app.store.mongo.client import get_db, get_quick_db


def create_conversations_many(wanted: dict[str, tuple[list[str], int]]) -> None:
    """conversation -> (owners, conversation type): one record per owner, created once (the unique
    index on owner and conversation), in one round trip; later calls never overwrite what owners
    changed. On the hot path for a conversation's first message."""
    insert_once(
        get_db().conversation,
        [
            {
                "owner_user_id": owner,
                "conversation_id": conv,
                "conversation_type": conv_type,
                "recv_msg_opt": RECV_AND_NOTIFY,
            }
            for conv, (owners, conv_type) in wanted.items()
            for owner in owners
        ],
    )


def conversations_of(user_id: str) -> list[str]:
    docs = get_db().conversation.find({"owner_user_id": user_id}, {"conversation_id": 1})
    return [d["conversation_id"] for d in docs]


def owned_conversations(user_id: str, conversation_ids: list[str]) -> set[str]:
    docs = get_db().conversation.find(
        {"owner_user_id": user_id, "conversation_id": {"$in": conversation_ids}}, {"conversation_id": 1}
    )
    return {d["conversation_id"] for d in docs}


def records_of(owner_user_id: str, conversation_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """conversation -> the owner's whole record, for all their conversations or the ones named."""
    query: dict[str, Any] = {"owner_user_id": owner_user_id}
    if conversation_ids is not None:
        query["conversation_id"] = {"$in": conversation_ids}
    return {d["conversation_id"]: d for d in get_db().conversation.find(query, {"_id": 0})}


def not_notify_conversation_ids(owner_user_id: str) -> list[str]:
    """The owner's conversations whose recvMsgOpt is not "receive and notify", sorted."""
    docs = get_db().conversation.find(
        {"owner_user_id": owner_user_id, "recv_msg_opt": {"$ne": RECV_AND_NOTIFY}}, {"_id": 0}
    )
    return sorted(d["conversation_id"] for d in docs)


def recv_msg_opts_of(owner_user_ids: list[str]) -> dict[str, dict[str, int]]:
    """owner -> {conversation -> the owner's recvMsgOpt} for the conversations where it is not 0, in
    one query for all owners (a hot-path lookup: through the client that gives up fast while MongoDB
    is out; a crowd of new receivers, as after a restart, costs one round trip, not one each)."""
    out: dict[str, dict[str, int]] = {owner: {} for owner in owner_user_ids}
    docs = get_quick_db().conversation.find(
        {"owner_user_id": {"$in": owner_user_ids}, "recv_msg_opt": {"$ne": RECV_AND_NOTIFY}},
        {"_id": 0, "owner_user_id": 1, "conversation_id": 1, "recv_msg_opt": 1},
    )
    for d in docs:
        out[d["owner_user_id"]][d["conversation_id"]] = int(d.get("recv_msg_opt") or RECV_AND_NOTIFY)
    return out


def set_recv_msg_opt(owner_user_id: str, conversation_id: str, opt: int) -> bool:
    """Set an owner's recvMsgOpt on their conversation record; False when they have no such record.

    Never creates a record: `conversation` records are also what lets a user read a conversation.
    """
    if opt not in RECV_MSG_OPTS:
        raise ValueError(f"recvMsgOpt must be one of {RECV_MSG_OPTS}, not {opt!r}")
    result = get_db().conversation.update_one(
        {"owner_user_id": owner_user_id, "conversation_id": conversation_id}, {"$set": {"recv_msg_opt": opt}}
    )
    return result.matched_count == 1


def recv_msg_opts(conversation_id: str, user_ids: list[str]) -> dict[str, int]:
    """user -> recvMsgOpt for this conversation; users without a record receive and are notified (0)."""
    opts = dict.fromkeys(user_ids, RECV_AND_NOTIFY)
    if not user_ids:
        return opts
    docs = get_db().conversation.find(
        {"conversation_id": conversation_id, "owner_user_id": {"$in": user_ids}},
        {"owner_user_id": 1, "recv_msg_opt": 1},
    )
    for d in docs:
        opts[d["owner_user_id"]] = int(d.get("recv_msg_opt") or RECV_AND_NOTIFY)
    return opts

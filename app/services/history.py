"""Read side: newest seqs, read seqs and message pulls, from the Redis cache first, then MongoDB.

A user reads only conversations they own a record of, and never below their own min seq.
"""

from __future__ import annotations

from typing import Any

from cachetools import TTLCache

from app.core import validation
from app.core.conversation import is_group_conversation
from app.core.errors import NO_PERMISSION, ImError
from app.core.msg_ops import view_for
from app.core.protocol import doc_to_msgdata, placeholder_msg
from app.core.validation import MAX_PULL_NUM
from app.proto import sdkws_pb2 as pb
from app.store.mongo import conversations, messages, seq_blocks, seq_users
from app.store.redis import msg_cache

# Memberships and min seqs change rarely; remembering them briefly keeps recent conversations
# readable from the Redis cache while MongoDB is unreachable. Only positive memberships are kept.
_members: TTLCache[tuple[str, str], bool] = TTLCache(maxsize=200_000, ttl=300)
_min_seqs: TTLCache[tuple[str, str], int] = TTLCache(maxsize=200_000, ttl=300)


def visible_max_seqs(conversation_ids: list[str]) -> dict[str, int]:
    """The visible max per conversation; rebuilt from MongoDB when Redis lost it."""
    found = msg_cache.get_visible_max_seqs(conversation_ids)
    out: dict[str, int] = {}
    for conv, seq in found.items():
        if seq is None:
            seq = messages.max_stored_seq(conv)
            if seq:
                seq = msg_cache.raise_visible_max_seq(conv, seq)
        out[conv] = seq
    return out


def seq_bounds(user_id: str, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(lowest seq the user may read, highest or 0 for none) per conversation: the conversation's
    min seq and the user's own bounds. The conversation's min seq changes rarely and is remembered;
    the user's own min seq (moved by clearing) is read from Redis each time, from MongoDB when Redis
    lost it. Group members' bounds change when they join or leave, so they are read from MongoDB."""
    conv_min = {c: _min_seqs[("", c)] for c in conversation_ids if ("", c) in _min_seqs}
    if missing := [c for c in conversation_ids if c not in conv_min]:
        found = seq_blocks.get_min_seqs(missing)
        for c in missing:
            conv_min[c] = _min_seqs.setdefault(("", c), found.get(c, 0))
    own_min = msg_cache.get_user_min_seqs(user_id, conversation_ids)
    groups = [c for c in conversation_ids if is_group_conversation(c)]
    unknown = [c for c in conversation_ids if own_min[c] is None and not is_group_conversation(c)]
    user = seq_users.get_user_seqs(user_id, groups + unknown) if groups or unknown else {}
    if unknown:
        refill = {c: user.get(c, {}).get("min_seq", 0) for c in unknown}
        msg_cache.fill_user_min_seqs(user_id, refill)
        own_min.update(refill)
    out: dict[str, tuple[int, int]] = {}
    for c in conversation_ids:
        own = user.get(c, {})
        low = max(1, conv_min[c], own_min[c] or 0, own.get("min_seq", 0))
        out[c] = (low, own.get("max_seq", 0) if is_group_conversation(c) else 0)
    return out


def forget_conversation_min_seq(conversation_id: str) -> None:
    """This node's remembered min seq of the conversation is stale (an admin moved it)."""
    _min_seqs.pop(("", conversation_id), None)


def min_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    return {c: low for c, (low, _) in seq_bounds(user_id, conversation_ids).items()}


def user_max_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    """The visible max, capped where the user left a group."""
    highs = visible_max_seqs(conversation_ids)
    caps = {
        c: cap for c, (_, cap) in seq_bounds(user_id, [c for c in conversation_ids if is_group_conversation(c)]).items()
    }
    return {c: min(seq, caps[c]) if caps.get(c) else seq for c, seq in highs.items()}


def read_seqs(user_id: str, conversation_ids: list[str]) -> dict[str, int]:
    """Redis first (moved at once by transfer), MongoDB's seq_user when Redis lost it."""
    found = msg_cache.get_read_seqs(user_id, conversation_ids)
    missing = [c for c, seq in found.items() if seq is None]
    stored = seq_users.get_user_seqs(user_id, missing) if missing else {}
    return {c: (seq if seq is not None else stored.get(c, {}).get("read_seq", 0)) for c, seq in found.items()}


def get_msgs(conversation_id: str, seqs: list[int], user_id: str = "") -> list[pb.MsgData]:
    """Messages by seq as `user_id` sees them (revoked form, own deletions: app/core/msg_ops.py),
    cache then MongoDB, with status-4 placeholders for seqs held by neither."""
    found: dict[int, dict[str, Any]] = msg_cache.get_cached_msgs(conversation_id, seqs)
    missing = [s for s in seqs if s not in found]
    if missing:
        found.update(messages.find_msgs(conversation_id, missing))
    return [
        doc_to_msgdata(view_for(found[s], user_id)) if s in found else placeholder_msg(conversation_id, s) for s in seqs
    ]


def check_members(user_id: str, conversation_ids: list[str]) -> None:
    for conv in set(conversation_ids):
        validation.check_conversation_id(conv)
    unknown = sorted({c for c in conversation_ids if (user_id, c) not in _members})
    owned = conversations.owned_conversations(user_id, unknown) if unknown else set()
    for conv in owned:
        _members[(user_id, conv)] = True
    denied = [c for c in unknown if c not in owned]
    if denied:
        raise ImError(NO_PERMISSION, f"{user_id} is not in conversation {denied[0]}")


def readable_bounds(user_id: str, conversation_ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(visible max, min seq) per conversation, after checking the user belongs to each."""
    check_members(user_id, conversation_ids)
    convs = sorted(set(conversation_ids))
    bounds = seq_bounds(user_id, convs)
    highs = visible_max_seqs(convs)
    return {c: min(h, bounds[c][1]) if bounds[c][1] else h for c, h in highs.items()}, {
        c: low for c, (low, _) in bounds.items()
    }


def newest_seqs(user_id: str) -> pb.GetMaxSeqResp:
    """1001: max and min seq of every conversation the user has."""
    convs = conversations.conversations_of(user_id)
    resp = pb.GetMaxSeqResp()
    lows = min_seqs(user_id, convs)
    for conv, seq in user_max_seqs(user_id, convs).items():
        resp.maxSeqs[conv] = seq
        resp.minSeqs[conv] = lows[conv] if seq else 0
    return resp


def pull_by_range(user_id: str, req: pb.PullMessageBySeqsReq) -> pb.PullMessageBySeqsResp:
    """1002: ranges per conversation; at most `num` (the newest) per range. A conversation named
    twice is answered once (the last range wins, as OpenIM's answer map); an answer holds at most
    MAX_PULL_MSGS messages, larger asks are refused before anything is read."""
    ranges = validation.dedupe_seq_ranges(req)
    highs, lows = readable_bounds(user_id, [r.conversationID for r in ranges])
    planned: list[tuple[str, int, int]] = []  # (conversation, begin, end); begin > end: nothing to read
    for seq_range in ranges:
        conv = seq_range.conversationID
        num = seq_range.num if 0 < seq_range.num <= MAX_PULL_NUM else MAX_PULL_NUM
        begin = max(seq_range.begin, lows[conv])
        end = min(seq_range.end, highs[conv])
        if begin <= end and end - begin + 1 > num:
            begin = end - num + 1  # more than asked for: the newest `num`, as OpenIM does
        planned.append((conv, begin, end))
    validation.check_pull_total(sum(end - begin + 1 for _, begin, end in planned if begin <= end))
    resp = pb.PullMessageBySeqsResp()
    for conv, begin, end in planned:
        pulled = resp.msgs[conv]
        if begin > end:
            pulled.isEnd = True
            continue
        pulled.Msgs.extend(get_msgs(conv, list(range(begin, end + 1)), user_id))
        pulled.isEnd = end >= highs[conv] if req.order == pb.PullOrderAsc else begin <= lows[conv]
        pulled.endSeq = end
    return resp


def pull_by_seq_list(user_id: str, req: pb.GetSeqMessageReq) -> pb.GetSeqMessageResp:
    """1005: given seqs per conversation; seqs outside [min seq, visible max] are left out. A
    conversation named twice is answered once, with the union of its seqs (each seq once)."""
    wanted_seqs = validation.dedupe_seq_lists(req)
    highs, lows = readable_bounds(user_id, list(wanted_seqs))
    resp = pb.GetSeqMessageResp()
    for conv, wanted in wanted_seqs.items():
        seqs = [s for s in wanted if lows[conv] <= s <= highs[conv]]
        if req.order == pb.PullOrderDesc:
            seqs.reverse()
        pulled = resp.msgs[conv]
        pulled.Msgs.extend(get_msgs(conv, seqs, user_id))
        pulled.isEnd = not seqs or min(seqs) <= lows[conv]
        pulled.endSeq = max(seqs) if seqs else 0
    return resp


def has_read_and_max(
    user_id: str, req: pb.GetConversationsHasReadAndMaxSeqReq
) -> pb.GetConversationsHasReadAndMaxSeqResp:
    """1006: per conversation (all of the user's when none are named) its max seq and the user's read seq."""
    if req.conversationIDs:
        convs = validation.check_conversation_ids(req.conversationIDs)
    else:
        convs = conversations.conversations_of(user_id)  # the user's own: however many there are
    check_members(user_id, convs)
    convs = sorted(set(convs))
    highs = user_max_seqs(user_id, convs)
    reads = read_seqs(user_id, convs)
    last = last_msgs(convs, highs, user_id)
    resp = pb.GetConversationsHasReadAndMaxSeqResp()
    for conv in convs:
        entry = resp.seqs[conv]
        entry.maxSeq = highs[conv]
        entry.hasReadSeq = min(reads[conv], highs[conv])
        entry.maxSeqTime = last[conv].sendTime if conv in last else 0
    return resp


def last_msgs(convs: list[str], highs: dict[str, int], user_id: str = "") -> dict[str, pb.MsgData]:
    return {c: get_msgs(c, [highs[c]], user_id)[0] for c in convs if highs[c] > 0}


def last_messages(user_id: str, req: pb.GetLastMessageReq) -> pb.GetLastMessageResp:
    """1007: the newest message of each named conversation."""
    convs = sorted(validation.check_conversation_ids(req.conversationIDs))
    check_members(user_id, convs)
    resp = pb.GetLastMessageResp()
    for conv, msg in last_msgs(convs, user_max_seqs(user_id, convs), user_id).items():
        resp.msgs[conv].CopyFrom(msg)
    return resp

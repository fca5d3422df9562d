"""Read side: newest seqs, read seqs and message pulls, from the Redis cache first, then MongoDB.

A user reads only conversations they own a record of, and never below their own min seq.
"""

from __future__ import annotations

from typing import Any

from cachetools import TTLCache

from app import cache, storage
from app.conversation import is_group_conversation
from app.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.proto import sdkws_pb2 as pb
from app.protocol import doc_to_msgdata, placeholder_msg

MAX_PULL_NUM = 100
MAX_SEQ_LIST = 1000

# Memberships and min seqs change rarely; remembering them briefly keeps recent conversations
# readable from the Redis cache while MongoDB is unreachable. Only positive memberships are kept.
_members: TTLCache[tuple[str, str], bool] = TTLCache(maxsize=200_000, ttl=300)
_min_seqs: TTLCache[tuple[str, str], int] = TTLCache(maxsize=200_000, ttl=300)


def visible_max_seqs(conversation_ids: list[str]) -> dict[str, int]:
    """The visible max per conversation; rebuilt from MongoDB when Redis lost it."""
    found = cache.get_visible_max_seqs(conversation_ids)
    out: dict[str, int] = {}
    for conv, seq in found.items():
        if seq is None:
            seq = storage.max_stored_seq(conv)
            if seq:
                seq = cache.raise_visible_max_seq(conv, seq)
        out[conv] = seq
    return out


def seq_bounds(user_id: str, conversation_ids: list[str]) -> dict[str, tuple[int, int]]:
    """(lowest seq the user may read, highest or 0 for none) per conversation: the conversation's
    min seq and the user's own bounds. Group members' bounds change when they join or leave, so
    they are read fresh; single chats' are remembered."""
    out = {c: (_min_seqs[(user_id, c)], 0) for c in conversation_ids if (user_id, c) in _min_seqs}
    missing = [c for c in conversation_ids if c not in out]
    if missing:
        conv_min = storage.get_min_seqs(missing)
        user = storage.get_user_seqs(user_id, missing)
        for c in missing:
            own = user.get(c, {})
            low = max(1, conv_min.get(c, 0), own.get("min_seq", 0))
            if is_group_conversation(c):
                out[c] = (low, own.get("max_seq", 0))
            else:
                out[c] = (_min_seqs.setdefault((user_id, c), low), 0)
    return out


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
    found = cache.get_read_seqs(user_id, conversation_ids)
    missing = [c for c, seq in found.items() if seq is None]
    stored = storage.get_user_seqs(user_id, missing) if missing else {}
    return {c: (seq if seq is not None else stored.get(c, {}).get("read_seq", 0)) for c, seq in found.items()}


def get_msgs(conversation_id: str, seqs: list[int]) -> list[pb.MsgData]:
    """Messages by seq, cache then MongoDB, with status-4 placeholders for seqs held by neither."""
    found: dict[int, dict[str, Any]] = cache.get_cached_msgs(conversation_id, seqs)
    missing = [s for s in seqs if s not in found]
    if missing:
        found.update(storage.find_msgs(conversation_id, missing))
    return [doc_to_msgdata(found[s]) if s in found else placeholder_msg(conversation_id, s) for s in seqs]


def check_members(user_id: str, conversation_ids: list[str]) -> None:
    if any(not c for c in conversation_ids):
        raise ImError(ARGS_ERROR, "empty conversationID")
    unknown = sorted({c for c in conversation_ids if (user_id, c) not in _members})
    owned = storage.owned_conversations(user_id, unknown) if unknown else set()
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
    convs = storage.conversations_of(user_id)
    resp = pb.GetMaxSeqResp()
    lows = min_seqs(user_id, convs)
    for conv, seq in user_max_seqs(user_id, convs).items():
        resp.maxSeqs[conv] = seq
        resp.minSeqs[conv] = lows[conv] if seq else 0
    return resp


def pull_by_range(user_id: str, req: pb.PullMessageBySeqsReq) -> pb.PullMessageBySeqsResp:
    """1002: ranges per conversation; at most `num` (the newest) per range."""
    highs, lows = readable_bounds(user_id, [r.conversationID for r in req.seqRanges])
    resp = pb.PullMessageBySeqsResp()
    for seq_range in req.seqRanges:
        conv = seq_range.conversationID
        max_seq, min_seq = highs[conv], lows[conv]
        num = seq_range.num if 0 < seq_range.num <= MAX_PULL_NUM else MAX_PULL_NUM
        begin = max(seq_range.begin, min_seq)
        end = min(seq_range.end, max_seq)
        pulled = resp.msgs[conv]
        if begin > end:
            pulled.isEnd = True
            continue
        if end - begin + 1 > num:
            begin = end - num + 1  # more than asked for: the newest `num`, as OpenIM does
        pulled.Msgs.extend(get_msgs(conv, list(range(begin, end + 1))))
        pulled.isEnd = end >= max_seq if req.order == pb.PullOrderAsc else begin <= min_seq
        pulled.endSeq = end
    return resp


def pull_by_seq_list(user_id: str, req: pb.GetSeqMessageReq) -> pb.GetSeqMessageResp:
    """1005: given seqs per conversation; seqs outside [min seq, visible max] are left out."""
    if sum(len(c.seqs) for c in req.conversations) > MAX_SEQ_LIST:
        raise ImError(ARGS_ERROR, f"at most {MAX_SEQ_LIST} seqs per request")
    highs, lows = readable_bounds(user_id, [c.conversationID for c in req.conversations])
    resp = pb.GetSeqMessageResp()
    for wanted in req.conversations:
        conv = wanted.conversationID
        seqs = sorted({s for s in wanted.seqs if lows[conv] <= s <= highs[conv]})
        if req.order == pb.PullOrderDesc:
            seqs.reverse()
        pulled = resp.msgs[conv]
        pulled.Msgs.extend(get_msgs(conv, seqs))
        pulled.isEnd = not seqs or min(seqs) <= lows[conv]
        pulled.endSeq = max(seqs) if seqs else 0
    return resp


def has_read_and_max(
    user_id: str, req: pb.GetConversationsHasReadAndMaxSeqReq
) -> pb.GetConversationsHasReadAndMaxSeqResp:
    """1006: per conversation (all of the user's when none are named) its max seq and the user's read seq."""
    convs = list(req.conversationIDs) or storage.conversations_of(user_id)
    check_members(user_id, convs)
    convs = sorted(set(convs))
    highs = user_max_seqs(user_id, convs)
    reads = read_seqs(user_id, convs)
    last = last_msgs(convs, highs)
    resp = pb.GetConversationsHasReadAndMaxSeqResp()
    for conv in convs:
        entry = resp.seqs[conv]
        entry.maxSeq = highs[conv]
        entry.hasReadSeq = min(reads[conv], highs[conv])
        entry.maxSeqTime = last[conv].sendTime if conv in last else 0
    return resp


def last_msgs(convs: list[str], highs: dict[str, int]) -> dict[str, pb.MsgData]:
    return {c: get_msgs(c, [highs[c]])[0] for c in convs if highs[c] > 0}


def last_messages(user_id: str, req: pb.GetLastMessageReq) -> pb.GetLastMessageResp:
    """1007: the newest message of each named conversation."""
    convs = sorted(set(req.conversationIDs))
    check_members(user_id, convs)
    resp = pb.GetLastMessageResp()
    for conv, msg in last_msgs(convs, user_max_seqs(user_id, convs)).items():
        resp.msgs[conv].CopyFrom(msg)
    return resp

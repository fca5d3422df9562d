"""Read side: newest seqs and message pulls, from the Redis cache first, then MongoDB."""

from __future__ import annotations

from typing import Any

from app import cache, storage
from app.errors import ARGS_ERROR, NO_PERMISSION, ImError
from app.proto import sdkws_pb2 as pb
from app.protocol import doc_to_msgdata, placeholder_msg

MAX_PULL_NUM = 100


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


def newest_seqs(user_id: str) -> pb.GetMaxSeqResp:
    convs = storage.conversations_of(user_id)
    resp = pb.GetMaxSeqResp()
    min_seqs = storage.get_min_seqs(convs)
    for conv, seq in visible_max_seqs(convs).items():
        resp.maxSeqs[conv] = seq
        resp.minSeqs[conv] = min_seqs.get(conv, 0)
    return resp


def get_msgs(conversation_id: str, seqs: list[int]) -> list[pb.MsgData]:
    """Messages by seq, cache then MongoDB, with status-4 placeholders for seqs held by neither."""
    found: dict[int, dict[str, Any]] = cache.get_cached_msgs(conversation_id, seqs)
    missing = [s for s in seqs if s not in found]
    if missing:
        found.update(storage.find_msgs(conversation_id, missing))
    return [doc_to_msgdata(found[s]) if s in found else placeholder_msg(conversation_id, s) for s in seqs]


def check_member(user_id: str, conversation_id: str) -> None:
    if not storage.is_conversation_owner(user_id, conversation_id):
        raise ImError(NO_PERMISSION, f"{user_id} is not in conversation {conversation_id}")


def pull_by_range(user_id: str, req: pb.PullMessageBySeqsReq) -> pb.PullMessageBySeqsResp:
    resp = pb.PullMessageBySeqsResp()
    for seq_range in req.seqRanges:
        conv = seq_range.conversationID
        if not conv:
            raise ImError(ARGS_ERROR, "seqRange without conversationID")
        check_member(user_id, conv)
        max_seq = visible_max_seqs([conv])[conv]
        min_seq = max(1, storage.get_min_seqs([conv]).get(conv, 0))
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

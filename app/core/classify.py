"""Pure message classification, as OpenIM's msgprocessor: what is stored, what goes offline."""

from __future__ import annotations

import json
import re
from typing import Any

from app.core.constants import CUSTOM_ONLINE_ONLY, HAS_READ_RECEIPT, TYPING

# Option keys (OpenIM's constant.IsHistory ...); a missing key means true.
OPT_HISTORY = "history"
OPT_PERSISTENT = "persistent"
OPT_OFFLINE_PUSH = "offlinePush"
OPT_SENDER_SYNC = "senderSync"

EPHEMERAL_TYPES = frozenset({TYPING, CUSTOM_ONLINE_ONLY, HAS_READ_RECEIPT})


def option(msg: dict[str, Any], key: str) -> bool:
    return bool((msg.get("options") or {}).get(key, True))


def is_stored(msg: dict[str, Any]) -> bool:
    """Stored messages get a seq, a cache entry and a MongoDB slot; the rest are pushed with seq 0."""
    if msg["content_type"] in EPHEMERAL_TYPES:
        return False
    return option(msg, OPT_HISTORY) and option(msg, OPT_PERSISTENT)


def is_read_receipt(msg: dict[str, Any]) -> bool:
    return bool(msg["content_type"] == HAS_READ_RECEIPT)


def goes_offline(msg: dict[str, Any]) -> bool:
    """Typing, online-only messages and read receipts never reach the offline push provider."""
    return msg["content_type"] not in EPHEMERAL_TYPES and option(msg, OPT_OFFLINE_PUSH)


# On a group notification: the members it is the last message for (kicked, quit, dismissed).
LEAVING_FIELD = "leaving_user_ids"


def leaving_users(msg: dict[str, Any]) -> list[str]:
    return [str(u) for u in msg.get(LEAVING_FIELD) or []]


def syncs_sender(msg: dict[str, Any]) -> bool:
    return option(msg, OPT_SENDER_SYNC)


# A MarkAsReadTips is a flat object with one list of seqs: anything deeper or longer is hostile.
READ_RECEIPT_MAX_CHARS = 64 * 1024
READ_RECEIPT_MAX_DEPTH = 8
_JSON_SPECIAL = re.compile(r'["\\\[\]{}]')


def json_depth(text: str) -> int:
    """How deeply JSON arrays and objects nest in `text` (strings skipped), without parsing it;
    one linear pass over the quotes, backslashes and brackets."""
    depth = deepest = 0
    in_string = False
    skip_to = -1
    for found in _JSON_SPECIAL.finditer(text):
        at, char = found.start(), found.group()
        if at < skip_to:
            continue  # the escaped character after a backslash
        if in_string:
            if char == "\\":
                skip_to = at + 2
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def read_receipt_seq(content: str) -> int:
    """`hasReadSeq` from a read receipt's content (OpenIM's MarkAsReadTips as JSON).

    Raises ValueError, never RecursionError: json.loads recurses once per nesting level, and a
    worker's deeper stack would overflow on content the gateway parsed fine."""
    if not isinstance(content, str):
        raise ValueError("read receipt content must be JSON text")
    if len(content) > READ_RECEIPT_MAX_CHARS:
        raise ValueError(f"read receipt content is longer than {READ_RECEIPT_MAX_CHARS} characters")
    if json_depth(content) > READ_RECEIPT_MAX_DEPTH:
        raise ValueError(f"read receipt content nests deeper than {READ_RECEIPT_MAX_DEPTH} levels")
    try:
        body = json.loads(content)
        if isinstance(body, dict) and isinstance(body.get("detail"), str):
            if json_depth(body["detail"]) > READ_RECEIPT_MAX_DEPTH:
                raise ValueError(f"read receipt detail nests deeper than {READ_RECEIPT_MAX_DEPTH} levels")
            body = json.loads(body["detail"])  # OpenIM's {"detail": MarkAsReadTips as JSON}
    except (ValueError, RecursionError) as exc:
        raise ValueError("read receipt content must be JSON") from exc
    seq = body.get("hasReadSeq") if isinstance(body, dict) else None
    if isinstance(seq, str) and seq.isdigit():
        seq = int(seq)
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
        raise ValueError("read receipt needs a non-negative integer hasReadSeq")
    return seq

"""Pure checks of one message doc, before a stage commits to it (P7: the unit of failure is one message).

The gateway validates what clients send; these checks are the pipeline's own line of defence for
whatever reaches a queue anyway (another publisher, an older gateway, a redrive): a message that
would make a later stage fail is refused here, alone, with a reason, instead of taking its batch
down with it in Redis, the broker or MongoDB.
"""

from __future__ import annotations

from typing import Any

import bson
from bson.errors import InvalidDocument

from app.core import classify
from app.core.constants import GROUP_CHAT, NOTIFICATION_CHAT, SINGLE_CHAT
from app.core.conversation import conversation_id_for
from app.core.validation import is_int, mongo_key_problem

# MongoDB documents hold 100 slots and may not exceed 16 MiB: a message over a hundredth of that
# (less the slots' own fields) could make its whole document unwritable.
MAX_STORED_MSG_BYTES = (16 * 1024 * 1024 - 64 * 1024) // 100
# The stored shape is flat (options, offline push info, id lists): deeper structures are not ours.
MAX_DOC_DEPTH = 4

STRING_FIELDS = ("send_id", "recv_id", "group_id", "client_msg_id", "content")
OPTIONAL_STRING_FIELDS = ("server_msg_id", "sender_nickname", "sender_face_url", "attached_info", "ex")
INT_FIELDS = ("session_type", "content_type")
OPTIONAL_INT_FIELDS = ("seq", "status", "send_time", "create_time", "msg_from", "sender_platform_id")
SESSION_TYPES = (SINGLE_CHAT, GROUP_CHAT, NOTIFICATION_CHAT)


class Refused(ValueError):
    """Why a stage cannot handle this message; the text goes into its dead letter."""


def check_fields(doc: Any) -> None:
    """The fields every stage reads, with the types they read them as."""
    if not isinstance(doc, dict):
        raise Refused(f"a message must be an object, not {type(doc).__name__}")
    for name in STRING_FIELDS:
        if not isinstance(doc.get(name), str):
            raise Refused(f"field {name} must be a string")
    for name in OPTIONAL_STRING_FIELDS:
        if doc.get(name) is not None and not isinstance(doc[name], str):
            raise Refused(f"field {name} must be a string")
    for name in INT_FIELDS:
        if not is_int(doc.get(name)):
            raise Refused(f"field {name} must be an integer")
    for name in OPTIONAL_INT_FIELDS:
        if doc.get(name) is not None and not is_int(doc[name]):
            raise Refused(f"field {name} must be an integer")
    if not doc["client_msg_id"] or not doc["send_id"]:
        raise Refused("client_msg_id and send_id must not be empty")
    if doc["session_type"] not in SESSION_TYPES:
        raise Refused(f"session_type {doc['session_type']} is not supported")
    if doc["session_type"] == GROUP_CHAT and not doc["group_id"]:
        raise Refused("a group message needs a group_id")
    if doc["session_type"] != GROUP_CHAT and not doc["recv_id"]:
        raise Refused("a single chat message needs a recv_id")
    options = doc.get("options")
    if options is not None and not (isinstance(options, dict) and all(isinstance(v, bool) for v in options.values())):
        raise Refused("options must map keys to booleans")
    push = doc.get("offline_push")
    if push is not None and not isinstance(push, dict):
        raise Refused("offline_push must be an object")
    for name in ("at_user_id_list", classify.LEAVING_FIELD):
        ids = doc.get(name)
        if ids is not None and not (isinstance(ids, list) and all(isinstance(u, str) for u in ids)):
            raise Refused(f"{name} must be a list of strings")
    conversation_id_for(doc["session_type"], doc["send_id"], doc["recv_id"], doc["group_id"])


# The top-level names the pipeline itself writes (protocol.msgdata_to_doc, transfer, the merge):
# fixed strings MongoDB takes, so only other names (and every nested key) are checked one by one.
_OWN_FIELD_NAMES = frozenset(
    (*STRING_FIELDS, *OPTIONAL_STRING_FIELDS, *INT_FIELDS, *OPTIONAL_INT_FIELDS)
    + ("is_read", "options", "offline_push", "at_user_id_list", "operation_id", classify.LEAVING_FIELD)
)
_CONTAINERS = (dict, list)
# A path is only spelled out for a refusal: (parent path, key or index), None at the message.
_Path = tuple[Any, Any] | None


def _spelled(path: _Path) -> str:
    parts: list[Any] = []
    while path is not None:
        path, step = path
        parts.append(step)
    out = ""
    for step in reversed(parts):
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
    return out or "the message"


def _check_keys_and_depth(doc: dict[str, Any]) -> None:
    """MongoDB's rules for field names, and a bound on nesting; iterative, so never a RecursionError.
    A value is `depth` containers deep; scalars are checked where they are found, never stacked."""
    stack: list[tuple[Any, _Path, int]] = [(doc, None, 0)]
    while stack:
        value, path, depth = stack.pop()
        inner = depth + 1
        if isinstance(value, dict):
            for key, item in value.items():
                if depth or key not in _OWN_FIELD_NAMES:
                    if not isinstance(key, str):
                        raise Refused(f"key {key!r} under {_spelled(path)} is not a string")
                    problem = mongo_key_problem(key)
                    if problem:
                        raise Refused(f"key {key!r} under {_spelled(path)} {problem}")
                if inner > MAX_DOC_DEPTH:
                    raise Refused(f"{_spelled((path, key))} nests deeper than {MAX_DOC_DEPTH} levels")
                if isinstance(item, _CONTAINERS):
                    stack.append((item, (path, key), inner))
        else:  # a list: only containers are ever stacked
            if value and inner > MAX_DOC_DEPTH:
                raise Refused(f"{_spelled((path, 0))} nests deeper than {MAX_DOC_DEPTH} levels")
            stack.extend((item, (path, i), inner) for i, item in enumerate(value) if isinstance(item, _CONTAINERS))


def check_stored_message(doc: dict[str, Any]) -> None:
    """What MongoDB will refuse, decided by MongoDB's own encoder (bson) on the message as a slot
    holds it. Its UTF-8 rule is also the cache's: a lone surrogate from JSON fails both."""
    _check_keys_and_depth(doc)
    try:
        size = len(bson.encode({"msg": doc}))
    except (InvalidDocument, OverflowError, UnicodeEncodeError, TypeError, ValueError) as exc:
        raise Refused(f"MongoDB cannot store it: {exc}") from exc
    if size > MAX_STORED_MSG_BYTES:
        raise Refused(f"it is {size} bytes as BSON, over the {MAX_STORED_MSG_BYTES} one slot may take")


def check_message(doc: Any) -> None:
    """Everything transfer checks before a batch's commit; raises Refused with the reason."""
    check_fields(doc)
    check_stored_message(doc)
    if classify.is_read_receipt(doc):
        try:
            classify.read_receipt_seq(doc["content"])
        except ValueError as exc:
            raise Refused(f"bad read receipt: {exc}") from exc


def problem_with(doc: Any) -> str | None:
    """The reason transfer cannot handle this message, or None when it can."""
    try:
        check_message(doc)
    except Refused as exc:
        return str(exc)
    except Exception as exc:  # a check that trips over the message is a refusal too, never a crash
        return f"unreadable message: {exc!r}"
    return None

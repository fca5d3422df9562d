"""Groups: membership and its changes, with OpenIM's group notifications.

MongoDB's `group` and `group_member` are the record; Redis holds each group's member set for the
hot paths (the gateway's "may this user send here", the push stage's recipients) and is changed in
step, MongoDB first. Each change sends its notification into the group's conversation through the
normal pipeline, so it gets a seq like any message. Users who leave are named on that notification:
they receive it, their read window closes at its seq, and nothing after it reaches them.
"""

from __future__ import annotations

import json
import time
import uuid
import zlib
from collections.abc import Iterable
from typing import Any

from app.core import classify, protocol, push_frames, validation
from app.core.constants import (
    GROUP_CHAT,
    GROUP_CREATED,
    GROUP_DISMISSED_NOTIFICATION,
    MEMBER_INVITED,
    MEMBER_KICKED,
    MEMBER_QUIT,
    MSG_FROM_SYSTEM,
    MSG_STATUS_SENDING,
)
from app.core.conversation import group_conversation_id
from app.core.errors import ARGS_ERROR, GROUP_DISMISSED, GROUP_ID_EXISTED, GROUP_ID_NOT_FOUND, NOT_IN_GROUP, ImError
from app.proto import sdkws_pb2 as pb
from app.services import history
from app.store.mongo import conversations, seq_users
from app.store.mongo import groups as group_store
from app.store.redis import group_members
from app.ws.acceptance import Ack, Pending
from app.ws.publish import publish_now

MAX_MEMBERS = 10_000


# --- OpenIM's shapes (the REST answers and the notifications' tips share them) ------------------


def openim_group_info(group: dict[str, Any], member_count: int) -> dict[str, Any]:
    """OpenIM's GroupInfo (sdkws)."""
    return {
        "groupID": group["group_id"],
        "groupName": group.get("group_name", ""),
        "notification": "",
        "introduction": "",
        "faceURL": "",
        "ownerUserID": group.get("owner_user_id", ""),
        "createTime": group.get("create_time", 0),
        "memberCount": member_count,
        "ex": "",
        "status": group.get("status", 0),
        "creatorUserID": group.get("creator_user_id", ""),
        "groupType": group.get("group_type", 2),
        "needVerification": 0,
        "lookMemberInfo": 0,
        "applyMemberFriend": 0,
        "notificationUpdateTime": 0,
        "notificationUserID": "",
    }


def checksum(parts: Iterable[str]) -> int:
    """A version for data without a version log: equal for the same content, in JS's safe integers."""
    return zlib.crc32("\n".join(parts).encode()) + 1


MAX_JOINED_SINCE = 20
"""How many newest groups joined_since tries: more new groups than that answer the whole list."""


def joined_since(version: int, newest_first: list[str]) -> list[str] | None:
    """The groups joined since a caller's join-groups `version` (a checksum of its sorted list), when
    that list is the current one without its k newest groups (k from 0 to MAX_JOINED_SINCE); else
    None (a group was left, or too many joined): the caller then needs the whole list. Without a
    version log this is how an SDK learns which groups are new (openim-sdk-core announces a group
    only for an incremental `insert`, never for a full sync)."""
    for k in range(min(len(newest_first), MAX_JOINED_SINCE) + 1):
        if checksum(sorted(newest_first[k:])) == version:
            return newest_first[:k]
    return None


def members_version(group: dict[str, Any], roles: dict[str, int]) -> int:
    """The version of a group's member list (user -> role level) and main info."""
    head = [group.get("group_name", ""), str(group.get("status", 0)), group.get("owner_user_id", "")]
    return checksum(head + sorted(f"{user}:{role}" for user, role in roles.items()))


MEMBERS_VERSION_ID = "group-members"  # versions are checksums: one id for all of them


# --- reads -----------------------------------------------------------------------------------


def members(group_id: str) -> set[str]:
    found = group_members.get_group_members(group_id)
    if found is None:
        ids = group_store.group_member_ids(group_id)
        group_members.fill_group_members(group_id, ids)
        found = set(ids)
    return found


def is_member(group_id: str, user_id: str) -> bool:
    answer = group_members.is_group_member(group_id, user_id)
    return user_id in members(group_id) if answer is None else answer


# --- changes ---------------------------------------------------------------------------------


def create(
    group_id: str, name: str, owner: str, member_ids: list[str], op_user: str, operation_id: str = ""
) -> dict[str, Any]:
    everyone = {owner: group_store.ROLE_OWNER, **{u: group_store.ROLE_MEMBER for u in member_ids if u != owner}}
    _check_ids(group_id, list(everyone))
    now = _now_ms()
    group = {
        "group_id": group_id,
        "group_name": name,
        "owner_user_id": owner,
        "creator_user_id": op_user,
        "status": group_store.GROUP_STATUS_OK,
        "group_type": 2,  # OpenIM's working group
        "create_time": now,
    }
    if not group_store.insert_group(group):
        raise ImError(GROUP_ID_EXISTED, f"group {group_id} already exists")
    group_store.add_group_members(group_id, everyone, now)
    conversations.create_conversations_many({group_conversation_id(group_id): (list(everyone), GROUP_CHAT)})
    group_members.fill_group_members(group_id, everyone)
    _notify(
        group,
        op_user,
        GROUP_CREATED,
        {"memberList": [_tip_member(group_id, u, r) for u, r in everyone.items()]},
        operation_id,
    )
    return group


def invite(group_id: str, user_ids: list[str], op_user: str, operation_id: str = "") -> list[str]:
    """Adds the users who are not members yet; they read the group from now on, not its past."""
    group = _open_group(group_id)
    _check_ids(group_id, user_ids)
    current = members(group_id)
    new = sorted(set(user_ids) - current)
    if not new:
        return []
    conv = group_conversation_id(group_id)
    group_store.add_group_members(group_id, {u: group_store.ROLE_MEMBER for u in new}, _now_ms())
    conversations.create_conversations_many({conv: (new, GROUP_CHAT)})
    start = history.visible_max_seqs([conv]).get(conv, 0) + 1
    seq_users.set_member_seq_bounds(conv, new, min_seq=start, max_seq=0)
    group_members.change_group_members(group_id, added=new)
    _notify(group, op_user, MEMBER_INVITED, {"invitedUserList": [_tip_member(group_id, u) for u in new]}, operation_id)
    return new


def kick(group_id: str, user_ids: list[str], op_user: str, operation_id: str = "") -> list[str]:
    group = _open_group(group_id)
    gone = sorted(set(user_ids) & members(group_id))
    if not gone:
        raise ImError(NOT_IN_GROUP, "none of these users is in the group")
    _remove(group_id, gone)
    tips = {"kickedUserList": [_tip_member(group_id, u) for u in gone]}
    _notify(group, op_user, MEMBER_KICKED, tips, operation_id, leaving=gone)
    return gone


def quit(group_id: str, user_id: str, operation_id: str = "") -> None:
    group = _open_group(group_id)
    if not is_member(group_id, user_id):
        raise ImError(NOT_IN_GROUP, f"{user_id} is not in group {group_id}")
    _remove(group_id, [user_id])
    _notify(group, user_id, MEMBER_QUIT, {"quitUser": _tip_member(group_id, user_id)}, operation_id, leaving=[user_id])


def dismiss(group_id: str, op_user: str, operation_id: str = "") -> None:
    group = _open_group(group_id)
    everyone = sorted(members(group_id))
    group_store.set_group_status(group_id, group_store.GROUP_STATUS_DISMISSED)
    _remove(group_id, everyone)
    dismissed = {**group, "status": group_store.GROUP_STATUS_DISMISSED}
    _notify(dismissed, op_user, GROUP_DISMISSED_NOTIFICATION, {}, operation_id, leaving=everyone)


# --- helpers ---------------------------------------------------------------------------------


def _open_group(group_id: str) -> dict[str, Any]:
    group = group_store.find_group(group_id)
    if group is None:
        raise ImError(GROUP_ID_NOT_FOUND, f"group {group_id} does not exist")
    if group.get("status") == group_store.GROUP_STATUS_DISMISSED:
        raise ImError(GROUP_DISMISSED, f"group {group_id} was dismissed")
    return group


def _remove(group_id: str, user_ids: list[str]) -> None:
    group_store.remove_group_members(group_id, user_ids)
    group_members.change_group_members(group_id, removed=user_ids)


def _tip_member(group_id: str, user_id: str, role: int = group_store.ROLE_MEMBER) -> dict[str, Any]:
    """A member as the tips name it (OpenIM's GroupMemberFullInfo, the fields we keep)."""
    return {"groupID": group_id, "userID": user_id, "roleLevel": role}


def _check_ids(group_id: str, user_ids: list[str]) -> None:
    validation.check_group_id(group_id)
    for user_id in user_ids:
        validation.check_user_id(user_id)
    if len(user_ids) > MAX_MEMBERS:
        raise ImError(ARGS_ERROR, f"at most {MAX_MEMBERS} members per request")


def notification_doc(
    group: dict[str, Any], op_user: str, content_type: int, tips: dict[str, Any], leaving: list[str], now_ms: int
) -> dict[str, Any]:
    """A group notification as a stored message: from the operator, in the group's conversation.
    Its tips carry what OpenIM's SDKs read: the group's info and member-list version after the change."""
    roles = group_store.group_member_roles(group["group_id"])
    detail = {
        "group": openim_group_info(group, len(roles)),
        "opUser": {"userID": op_user, "groupID": group["group_id"]},
        "operationTime": now_ms,
        "groupMemberVersion": members_version(group, roles),
        "groupMemberVersionID": MEMBERS_VERSION_ID,
        **tips,
    }
    msg = pb.MsgData(
        sendID=op_user,
        groupID=group["group_id"],
        clientMsgID=uuid.uuid4().hex,
        serverMsgID=uuid.uuid4().hex,
        sessionType=GROUP_CHAT,
        msgFrom=MSG_FROM_SYSTEM,
        contentType=content_type,
        content=json.dumps({"detail": json.dumps(detail)}).encode(),
        sendTime=now_ms,
        createTime=now_ms,
        status=MSG_STATUS_SENDING,
        # as OpenIM's defaults for group notifications: no offline push, not counted as unread
        options={classify.OPT_OFFLINE_PUSH: False, "unreadCount": False},
    )
    doc = protocol.msgdata_to_doc(msg)
    if leaving:
        doc[classify.LEAVING_FIELD] = leaving
    return doc


def _notify(
    group: dict[str, Any],
    op_user: str,
    content_type: int,
    tips: dict[str, Any],
    operation_id: str,
    leaving: list[str] | None = None,
) -> None:
    """`operation_id`: the request's, carried by the notification's pushes. OpenIM's SDKs make
    further requests with a push's operationID (the JS SDK fetches a new conversation with it),
    so a push never goes without one."""
    doc = notification_doc(group, op_user, content_type, tips, leaving or [], _now_ms())
    doc[push_frames.OPERATION_ID] = operation_id or uuid.uuid4().hex
    conv = group_conversation_id(group["group_id"])
    publish_now([Pending(conv, doc["client_msg_id"], Ack(doc["server_msg_id"], doc["send_time"]), doc)])


def _now_ms() -> int:
    return int(time.time() * 1000)

"""Group REST on the gateway's port, OpenIM's paths and envelope (headers `token`, `operationID`).

Changes (create, invite, kick, quit, dismiss) are made by an admin token, or by the group's owner
(create: the caller as owner; quit: the member itself). Reads are open to the group's members.

The sync calls of OpenIM's SDKs (get_incremental_join_groups, get_incremental_group_members_batch,
get_full_*_ids) are answered from the current membership, with no version log: a version is a
checksum of what it describes, so an unchanged list answers "nothing new" and a changed one the
whole current list (`full: true`). See docs/openim-js-sdk.md.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from flask import Blueprint, Response, request

from app.api.envelope import MAX_IDS, acting_user, api_response, caller, ids_arg, int_arg, json_body
from app.api.infos import group_infos, users_info
from app.core.errors import ARGS_ERROR, GROUP_ID_NOT_FOUND, NO_PERMISSION, NOT_IN_GROUP, ImError
from app.core.validation import check_group_id
from app.services import groups
from app.services.auth import TokenClaims
from app.store.mongo import groups as group_store

log = logging.getLogger(__name__)

group_api = Blueprint("group_api", __name__)

JOIN_GROUPS_VERSION_ID = "join-groups"  # versions here are checksums: one id for all of them
MEMBERS_VERSION_ID = groups.MEMBERS_VERSION_ID
MAX_PAGE = 1000


# --- answers in OpenIM's shapes ------------------------------------------------------------------


def member_infos(members: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenIM's GroupMemberFullInfo; the nickname and face are the user's own (no group nicknames)."""
    users = {u["userID"]: u for u in users_info(m["user_id"] for m in members)}
    return [
        {
            "groupID": m["group_id"],
            "userID": m["user_id"],
            "roleLevel": m.get("role_level", group_store.ROLE_MEMBER),
            "joinTime": m.get("join_time", 0),
            "nickname": users[m["user_id"]]["nickname"],
            "faceURL": users[m["user_id"]]["faceURL"],
            "appMangerLevel": 0,
            "joinSource": 0,
            "operatorUserID": "",
            "ex": "",
            "muteEndTime": 0,
            "inviterUserID": "",
        }
        for m in members
    ]


def members_version(group: dict[str, Any], members: list[dict[str, Any]]) -> int:
    return groups.members_version(group, {m["user_id"]: m.get("role_level", group_store.ROLE_MEMBER) for m in members})


def join_groups_version(group_ids: list[str]) -> int:
    return groups.checksum(sorted(group_ids))


# --- access --------------------------------------------------------------------------------------


def existing_group(group_id: str) -> dict[str, Any]:
    group = group_store.find_group(group_id)
    if group is None:
        raise ImError(GROUP_ID_NOT_FOUND, f"group {group_id} does not exist")
    return group


def require_owner_or_admin(claims: TokenClaims, group_id: str) -> None:
    if not claims.admin and existing_group(group_id).get("owner_user_id") != claims.user_id:
        raise ImError(NO_PERMISSION, "only the group's owner or an admin may do this")


def require_member(claims: TokenClaims, group_id: str) -> None:
    if not claims.admin and not groups.is_member(group_id, claims.user_id):
        raise ImError(NOT_IN_GROUP, f"{claims.user_id} is not in group {group_id}")


def operation_id() -> str:
    """The request's operationID (caller() made sure there is one): its notification's pushes carry it."""
    return request.headers.get("operationID", "")


def page_arg(body: dict[str, Any]) -> tuple[int, int]:
    """OpenIM's `pagination {pageNumber (from 1), showNumber}` as (offset, count); none = everything."""
    pagination = body.get("pagination")
    if pagination is None:
        return 0, MAX_PAGE
    if not isinstance(pagination, dict):
        raise ImError(ARGS_ERROR, "pagination must be an object")
    number, show = int_arg(pagination, "pageNumber", 1), int_arg(pagination, "showNumber", MAX_PAGE)
    if number < 1 or not 0 < show <= MAX_PAGE:
        raise ImError(ARGS_ERROR, f"pageNumber must be at least 1 and showNumber 1 to {MAX_PAGE}")
    return (number - 1) * show, show


# --- changes -------------------------------------------------------------------------------------


@group_api.post("/group/create_group")
def create_group() -> Response:
    """As OpenIM: the caller (or, for an admin, anyone) is the owner; an empty groupID gets one."""
    claims, body = caller(), json_body()
    info = body.get("groupInfo") or {}
    if not isinstance(info, dict):
        raise ImError(ARGS_ERROR, "groupInfo must be an object")
    owner = acting_user(claims, body, "ownerUserID")
    members = ids_arg(body, "memberUserIDs") + ids_arg(body, "adminUserIDs")
    group_id = check_group_id(info.get("groupID")) if info.get("groupID") else uuid.uuid4().hex
    name = info.get("groupName") if isinstance(info.get("groupName"), str) else ""
    group = groups.create(group_id, str(name)[:255], owner, members, claims.user_id, operation_id())
    log.info("group %s created by %s with %d members", group_id, claims.user_id, len(set(members) | {owner}))
    return api_response({"groupInfo": groups.openim_group_info(group, len(set(members) | {owner}))})


@group_api.post("/group/invite_user_to_group")
def invite_user_to_group() -> Response:
    claims, body = caller(), json_body()
    group_id = check_group_id(body.get("groupID"))
    require_owner_or_admin(claims, group_id)
    groups.invite(group_id, ids_arg(body, "invitedUserIDs"), claims.user_id, operation_id())
    return api_response({})


@group_api.post("/group/kick_group")
def kick_group() -> Response:
    claims, body = caller(), json_body()
    group_id = check_group_id(body.get("groupID"))
    require_owner_or_admin(claims, group_id)
    groups.kick(group_id, ids_arg(body, "kickedUserIDs"), claims.user_id, operation_id())
    return api_response({})


@group_api.post("/group/quit_group")
def quit_group() -> Response:
    """`userID` (the token's user unless an admin calls); as OpenIM, none means the token's user."""
    claims, body = caller(), json_body()
    user_id = acting_user(claims, body) if body.get("userID") else claims.user_id
    groups.quit(check_group_id(body.get("groupID")), user_id, operation_id())
    return api_response({})


@group_api.post("/group/dismiss_group")
def dismiss_group() -> Response:
    claims, body = caller(), json_body()
    group_id = check_group_id(body.get("groupID"))
    require_owner_or_admin(claims, group_id)
    groups.dismiss(group_id, claims.user_id, operation_id())
    return api_response({})


# --- reads ---------------------------------------------------------------------------------------


@group_api.post("/group/get_group_member_list")
def get_group_member_list() -> Response:
    claims, body = caller(), json_body()
    group_id = check_group_id(body.get("groupID"))
    require_member(claims, group_id)
    offset, count = page_arg(body)
    members = group_store.group_members(group_id)
    return api_response({"total": len(members), "members": member_infos(members[offset : offset + count])})


@group_api.post("/group/get_group_members_info")
def get_group_members_info() -> Response:
    """The members among `userIDs` (others are left out): the SDK sends to a group only when the
    sender is in this answer, and names senders in group history from it."""
    claims, body = caller(), json_body()
    group_id = check_group_id(body.get("groupID"))
    require_member(claims, group_id)
    wanted = set(ids_arg(body, "userIDs"))
    members = [m for m in group_store.group_members(group_id) if m["user_id"] in wanted]
    return api_response({"members": member_infos(members)})


@group_api.post("/group/get_groups_info")
def get_groups_info() -> Response:
    claims, body = caller(), json_body()
    wanted = [g for g in ids_arg(body, "groupIDs") if claims.admin or groups.is_member(g, claims.user_id)]
    return api_response({"groupInfos": list(group_infos(wanted).values())})


@group_api.post("/group/get_joined_group_list")
def get_joined_group_list() -> Response:
    """The user's groups, newest joined first, a page at a time."""
    user_id = acting_user(caller(), json_body(), "fromUserID")
    offset, count = page_arg(json_body())
    joined = group_store.groups_of(user_id)
    infos = group_infos(joined[offset : offset + count])
    return api_response({"total": len(joined), "groups": list(infos.values())})


@group_api.post("/group/get_full_join_group_ids")
def get_full_join_group_ids() -> Response:
    user_id = acting_user(caller(), json_body())
    ids = sorted(group_store.groups_of(user_id))
    return api_response(
        {"version": join_groups_version(ids), "versionID": JOIN_GROUPS_VERSION_ID, "equal": False, "groupIDs": ids}
    )


@group_api.post("/group/get_full_group_member_user_ids")
def get_full_group_member_user_ids() -> Response:
    claims, body = caller(), json_body()
    group_id = check_group_id(body.get("groupID"))
    require_member(claims, group_id)
    group, members = existing_group(group_id), group_store.group_members(group_id)
    return api_response(
        {
            "version": members_version(group, members),
            "versionID": MEMBERS_VERSION_ID,
            "equal": False,
            "userIDs": [m["user_id"] for m in members],
        }
    )


def incremental(asked: dict[str, Any], version_id: str, current: int) -> dict[str, Any]:
    """An incremental answer saying nothing changed when the caller holds the current version;
    else `full`, to be filled with the whole current list. No change is `null`, as OpenIM's server
    writes an empty Go slice: the JS SDK takes an empty member list for changes and indexes it."""
    same = asked.get("versionID") == version_id and int_arg(asked, "version") == current
    return {
        "version": current,
        "versionID": version_id,
        "full": not same,
        "delete": None,
        "insert": None,
        "update": None,
        "sortVersion": 0,
    }


@group_api.post("/group/get_incremental_join_groups")
def get_incremental_join_groups() -> Response:
    """The SDKs announce a group (OnJoinedGroupAdded) for each `insert` of an incremental answer:
    when the caller's list is ours without the newest groups, those are the insert (`full: false`);
    otherwise (first sync, a group left) the whole list, `full: true` (the core SDK then replaces its
    list silently; the JS SDK announces every insert)."""
    body = json_body()
    user_id = acting_user(caller(), body)
    newest_first = group_store.groups_of(user_id)
    ids = sorted(newest_first)
    answer = incremental(body, JOIN_GROUPS_VERSION_ID, join_groups_version(ids))
    if answer["full"]:
        new = None
        if body.get("versionID") == JOIN_GROUPS_VERSION_ID:
            new = groups.joined_since(int_arg(body, "version"), newest_first)
        answer["full"] = new is None
        answer["insert"] = list(group_infos(ids if new is None else new).values()) or None
    return api_response(answer)


@group_api.post("/group/get_incremental_group_members_batch")
def get_incremental_group_members_batch() -> Response:
    """`respList` per asked group the user is still in (others are left out, so the SDK forgets
    them), with the group's info when anything changed."""
    body = json_body()
    user_id = acting_user(caller(), body)
    reqs = body.get("reqList") or []
    if not isinstance(reqs, list) or len(reqs) > MAX_IDS or any(not isinstance(r, dict) for r in reqs):
        raise ImError(ARGS_ERROR, f"reqList must be a list of at most {MAX_IDS} objects")
    out: dict[str, Any] = {}
    for req in reqs:
        group_id = check_group_id(req.get("groupID"))
        group = group_store.find_group(group_id)
        if group is None or not groups.is_member(group_id, user_id):
            continue
        members = group_store.group_members(group_id)
        answer = incremental(req, MEMBERS_VERSION_ID, members_version(group, members))
        if answer["full"]:
            answer["insert"] = member_infos(members)
            answer["group"] = groups.openim_group_info(group, len(members))
        out[group_id] = answer
    return api_response({"respList": out})

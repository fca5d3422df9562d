"""OpenIM's UserInfo and GroupInfo answers, which the openim and groups blueprints both give.

Users are a small `user` collection (nickname, face) registered through /user/user_register.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from app.services import groups
from app.store.mongo import groups as group_store
from app.store.mongo import users as user_store


def users_info(user_ids: Iterable[str]) -> list[dict[str, Any]]:
    """OpenIM's UserInfo for each id, registered or not (an unknown user has no nickname or face)."""
    wanted = list(user_ids)
    found = user_store.find_users(wanted)
    out = []
    for user_id in wanted:
        doc = found.get(user_id, {})
        out.append(
            {
                "userID": user_id,
                "nickname": doc.get("nickname", ""),
                "faceURL": doc.get("face_url", ""),
                "ex": doc.get("ex", ""),
                "createTime": int(doc.get("create_time", 0)),
                "appMangerLevel": 0,
                "globalRecvMsgOpt": int(doc.get("global_recv_msg_opt", 0)),
            }
        )
    return out


def group_infos(group_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """GroupInfo of each existing group among `group_ids`."""
    out = {}
    for group_id in dict.fromkeys(group_ids):
        group = group_store.find_group(group_id)
        if group is not None:
            out[group_id] = groups.openim_group_info(group, len(groups.members(group_id)))
    return out

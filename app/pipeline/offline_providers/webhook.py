"""Generic JSON webhook: one POST per conversation and batch of offline recipients (OFFLINE_PUSH_URL)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.pipeline.offline_providers.base import PushResult
from app.pipeline.offline_providers.http import post_json, raise_for_status


def build_payload(
    conversation_id: str,
    user_ids: list[str],
    title: str,
    desc: str,
    msgs: list[dict[str, Any]],
    badges: Mapping[str, int],
) -> dict[str, Any]:
    return {
        "userIDs": user_ids,
        "badges": {u: badges[u] for u in user_ids if u in badges},  # each user's unread count
        "conversationID": conversation_id,
        "title": title,
        "desc": desc,
        "count": len(msgs),
        "msgs": [
            {
                "sendID": m["send_id"],
                "clientMsgID": m["client_msg_id"],
                "serverMsgID": m["server_msg_id"],
                "seq": m["seq"],
                "contentType": m["content_type"],
                "content": m["content"],
                "sendTime": m["send_time"],
            }
            for m in msgs
        ],
    }


class Webhook:
    name = "webhook"
    counts_badges = True

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def send(
        self,
        conversation_id: str,
        user_ids: list[str],
        title: str,
        desc: str,
        msgs: list[dict[str, Any]],
        badges: Mapping[str, int],
    ) -> PushResult:
        body = build_payload(conversation_id, user_ids, title, desc, msgs, badges)
        raise_for_status(post_json(self.url, body, self.timeout), "webhook")
        return PushResult(delivered=list(user_ids))

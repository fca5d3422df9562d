"""Push stage: find where each recipient is online and send the messages only to those gateway nodes.

OpenIM broadcasts every push to every gateway; here one Redis publish per gateway node carries that
node's recipients (P6). Recipients with no live connection go to the offline push task.
"""

from __future__ import annotations

import logging
from typing import Any

from app import cache, classify
from app.celery_app import celery_app
from app.conversation import NOTIFICATION_CHAT, SINGLE_CHAT

log = logging.getLogger(__name__)


def recipients(msg: dict[str, Any]) -> list[tuple[str, int]]:
    """(user, platform to skip) pairs: the receiver on all devices, and the sender on its other
    devices unless the message's senderSync option is off."""
    if msg["session_type"] not in (SINGLE_CHAT, NOTIFICATION_CHAT):
        return []
    out = [(msg["recv_id"], 0)]
    if msg["send_id"] != msg["recv_id"] and classify.syncs_sender(msg):
        out.append((msg["send_id"], int(msg["sender_platform_id"])))
    return out


def plan_deliveries(
    committed: dict[str, list[dict[str, Any]]],
    online: dict[str, dict[int, str]],
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[str]]]:
    """Pure routing: node id -> deliveries for that node, and conversation -> offline receivers."""
    by_node: dict[str, list[dict[str, Any]]] = {}
    offline: dict[str, list[str]] = {}
    for conv, msgs in committed.items():
        if not msgs:
            continue
        targets: dict[str, dict[str, int]] = {}
        for user_id, skip_platform in recipients(msgs[0]):
            nodes = {node for platform, node in online.get(user_id, {}).items() if platform != skip_platform}
            if not nodes:
                # the receiver only (the sender's own devices never go offline), and only for
                # messages that may go offline at all (not typing, receipts, online-only)
                if skip_platform == 0 and any(classify.goes_offline(m) for m in msgs):
                    offline.setdefault(conv, []).append(user_id)
                continue
            for node in nodes:
                targets.setdefault(node, {})[user_id] = skip_platform
        for node, users in targets.items():
            by_node.setdefault(node, []).append(
                {"conversation_id": conv, "users": [[u, skip] for u, skip in users.items()], "msgs": msgs}
            )
    return by_node, offline


@celery_app.task(name="push.batch", acks_late=True)
def push_batch(committed: dict[str, list[dict[str, Any]]]) -> int:
    users = sorted({u for msgs in committed.values() if msgs for u, _ in recipients(msgs[0])})
    online = cache.get_online_platforms(users)
    by_node, offline = plan_deliveries(committed, online)
    for node, deliveries in by_node.items():
        receivers = cache.publish_to_node(node, {"deliveries": deliveries})
        if receivers == 0:
            log.warning("gateway node %s has no push subscriber; its users will catch up by pulling", node)
    if offline:
        from app.tasks.offline import offline_push

        for conv, user_ids in offline.items():
            pushable = [m for m in committed[conv] if classify.goes_offline(m)]
            offline_push.apply_async(args=[conv, user_ids, pushable])
    return len(by_node)

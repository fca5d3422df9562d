"""Push stage: find where each recipient is online and send the messages only to those gateway nodes.

OpenIM broadcasts every push to every gateway; here one Redis publish per gateway node carries that
node's recipients (P6). Recipients with no live phone connection go to the offline push task. A message
whose push cannot be built or routed is dead-lettered alone; the rest of its batch is pushed (P7).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from app.celery_app import celery_app
from app.config import settings
from app.core import classify
from app.core import webhooks as webhook_rules
from app.core.constants import GROUP_CHAT, NOTIFICATION_CHAT, PUSH_TERMINALS, SINGLE_CHAT
from app.pipeline import dead_letters, offline_providers
from app.pipeline import journal as hand_offs
from app.pipeline.backoff import TRANSIENT_ERRORS, until_done
from app.services import groups
from app.store.redis.online import OnlineEntry, get_online, publish_to_node
from app.tasks import webhooks as webhook_tasks

log = logging.getLogger(__name__)


def recipients(msg: dict[str, Any], group_members: set[str] | None = None) -> list[str]:
    """Single chat: the receiver. Group: every member, and the users a notification says are
    leaving (it is the last message they get). Plus the sender unless its senderSync option is off,
    on every device: as OpenIM, the sending device gets its own message back, which is how OpenIM's
    SDKs learn the seq of what they sent."""
    sender = msg["send_id"]
    if msg["session_type"] in (SINGLE_CHAT, NOTIFICATION_CHAT):
        others = {msg["recv_id"]}
    elif msg["session_type"] == GROUP_CHAT:
        # a beforeGroupOnlinePush webhook may have named the recipients itself
        chosen = msg.get(webhook_rules.PUSH_TO_FIELD)
        others = set(chosen) if chosen else set(group_members or ()) | set(classify.leaving_users(msg))
    else:
        return []
    out = sorted(others - {sender})
    note_to_self = msg["session_type"] != GROUP_CHAT and sender in others
    if note_to_self or classify.syncs_sender(msg):
        out.append(sender)
    return out


@dataclass
class Plan:
    by_node: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # node -> deliveries
    offline: list[tuple[str, list[str], list[dict[str, Any]]]] = field(default_factory=list)  # conv, users, msgs


def plan_deliveries(
    committed: dict[str, list[dict[str, Any]]],
    online: dict[str, list[OnlineEntry]],
    group_members: dict[str, set[str]] | None = None,
) -> Plan:
    """Pure routing. Consecutive messages of a conversation with the same recipients travel together;
    recipients with no live iOS or Android connection also go to offline push (never the sender)."""
    plan = Plan()
    for conv, msgs in committed.items():
        members = (group_members or {}).get(msgs[0].get("group_id", "")) if msgs else None
        for run, targets in _runs(msgs, members):
            by_node: dict[str, list[str]] = {}
            offline_users: list[str] = []
            for user_id in targets:
                # an entry marked background is an iOS app that cannot take socket pushes
                live = [e for e in online.get(user_id, []) if not e.background]
                nodes = {e.node_id for e in live}
                # OpenIM: only a phone's socket makes a phone notification needless (web and desktop
                # users still get one)
                if user_id != run[0]["send_id"] and not any(e.platform_id in PUSH_TERMINALS for e in live):
                    offline_users.append(user_id)
                for node in nodes:
                    by_node.setdefault(node, []).append(user_id)
            for node, users in by_node.items():
                plan.by_node.setdefault(node, []).append({"conversation_id": conv, "users": users, "msgs": run})
            pushable = [m for m in run if classify.goes_offline(m)]
            if offline_users and pushable:
                plan.offline.append((conv, offline_users, pushable))
    return plan


def _runs(msgs: list[dict[str, Any]], members: set[str] | None) -> list[tuple[list[dict[str, Any]], list[str]]]:
    runs: list[tuple[list[dict[str, Any]], list[str]]] = []
    for msg in msgs:
        targets = recipients(msg, members)
        if runs and runs[-1][1] == targets and runs[-1][0][0]["send_id"] == msg["send_id"]:
            runs[-1][0].append(msg)
        else:
            runs.append(([msg], targets))
    return runs


def plan_batch(committed: dict[str, list[dict[str, Any]]]) -> Plan:
    """Resolve recipients, where they are online, and route (one Redis round trip for presence)."""
    group_ids = {m["group_id"] for msgs in committed.values() for m in msgs[:1] if m["session_type"] == GROUP_CHAT}
    members = {gid: groups.members(gid) for gid in group_ids}
    users = sorted(
        {u for msgs in committed.values() for m in msgs for u in recipients(m, members.get(m.get("group_id", "")))}
    )
    return plan_deliveries(committed, get_online(users), members)


def dead_letter(conv: str, msgs: list[Any], reason: str, error: BaseException | None = None) -> None:
    until_done(
        partial(
            dead_letters.put,
            "push",
            reason,
            dead_letters.task_payload("push", [{conv: msgs}]),
            conversation=conv,
            error=error,
        ),
        "dead letter",
    )


def plan_isolated(committed: dict[str, list[dict[str, Any]]]) -> Plan:
    """The batch's plan; if building it raises, each message is planned alone, and only one that
    raises by itself is dead-lettered (P7). Outages raise: the journal runs the hand-off again."""
    try:
        return plan_batch(committed)
    except TRANSIENT_ERRORS:
        raise
    except Exception as exc:
        log.warning("planning a push batch failed (%r): planning one message at a time", exc)
    plan = Plan()
    for conv, msgs in committed.items() if isinstance(committed, dict) else [("", committed)]:
        for msg in msgs if isinstance(msgs, list) else [msgs]:
            try:
                one = plan_batch({conv: [msg]})
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                log.exception("cannot route a push", extra={"conversationID": conv})
                dead_letter(conv, [msg], f"cannot route it: {exc!r}"[:300], exc)
                continue
            for node, deliveries in one.by_node.items():
                plan.by_node.setdefault(node, []).extend(deliveries)
            plan.offline.extend(one.offline)
    return plan


@celery_app.task(name="push.batch", acks_late=True)
def push_batch(committed: dict[str, list[dict[str, Any]]], journal: list[str] | None = None) -> int:
    plan = plan_isolated(webhook_tasks.before_push(committed))
    for node, deliveries in plan.by_node.items():
        try:
            receivers = publish_to_node(node, {"deliveries": deliveries})
        except TRANSIENT_ERRORS:
            raise
        except Exception as exc:  # one node's payload cannot be sent: keep it, push the others
            for delivery in deliveries:
                dead_letter(delivery["conversation_id"], delivery["msgs"], f"cannot publish it: {exc!r}"[:300], exc)
            continue
        if receivers == 0:
            log.warning("gateway node %s has no push subscriber; its users will catch up by pulling", node)
    if plan.offline and offline_providers.enabled(settings):
        from app.tasks.offline import offline_push

        for conv, user_ids, msgs in plan.offline:
            try:
                offline_push.apply_async(args=[conv, user_ids, msgs])
            except TRANSIENT_ERRORS:
                raise
            except Exception as exc:
                dead_letter(conv, msgs, f"cannot hand it to offline push: {exc!r}"[:300], exc)
    webhook_tasks.after_send(committed)
    hand_offs.done_later([journal])
    return len(plan.by_node)

"""OpenIM's before-send webhooks on the gateway: beforeSendSingleMsg / beforeSendGroupMsg may refuse a
message, then beforeMsgModify may change it, before it is accepted (app/pipeline/webhooks.py calls;
app/core/webhooks.py decides). A modified message is checked again like a client's."""

from __future__ import annotations

from typing import Any

from app.config import settings
from app.core import protocol, validation
from app.core import webhooks as rules
from app.core.constants import GROUP_CHAT
from app.core.errors import ARGS_ERROR, ImError
from app.pipeline import webhooks as hooks

SEND_HOOKS = ("beforeSendSingleMsg", "beforeSendGroupMsg", "beforeMsgModify")


def before_send(doc: dict[str, Any], operation_id: str) -> dict[str, Any]:
    """The message to accept (maybe modified); raises ImError when a webhook refuses it."""
    config = hooks.config()
    if not config.any_enabled(*SEND_HOOKS):
        return doc
    name = "beforeSendGroupMsg" if doc.get("session_type") == GROUP_CHAT else "beforeSendSingleMsg"
    cfg = config.enabled(name)
    if cfg is not None and rules.sees(cfg, doc):
        hooks.before(name, rules.message_body(name, doc, operation_id), operation_id)
    cfg = config.enabled("beforeMsgModify")
    if cfg is None or not rules.sees(cfg, doc):
        return doc
    answer = hooks.before("beforeMsgModify", rules.message_body("beforeMsgModify", doc, operation_id), operation_id)
    if not answer:
        return doc
    try:
        changed = rules.modified(doc, answer)
    except ValueError as exc:
        raise ImError(ARGS_ERROR, f"webhook beforeMsgModify: {exc}") from exc
    validation.check_msgdata(protocol.doc_to_msgdata(changed), settings.max_content_bytes)
    return changed

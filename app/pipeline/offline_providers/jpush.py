"""JPush REST API v3 (POST /v3/push): HTTP Basic appKey:masterSecret, audience by alias (our user IDs).

Each request carries a `sendno` of ours; JPush echoes it in its answer, and an answer with another
sendno is not the answer to our request (treated as a failure, never as a delivery).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from typing import Any

from app.pipeline.offline_providers.base import (
    ProviderMisconfigured,
    PushResult,
    RejectedError,
    chunks,
    deliver_in_parts,
    ios_sound,
    push_extras,
)
from app.pipeline.offline_providers.http import answer_json, post_json, raise_for_status

# JPush takes at most 1,000 aliases in one push.
MAX_ALIASES = 1000
# JPush's error code when none of the aliases has a registered device: nobody to notify, not a failure.
NO_DEVICE_FOR_AUDIENCE = 1011
# Offline notifications older than a day are noise.
TIME_TO_LIVE_SECONDS = 86400


def basic_auth(app_key: str, master_secret: str) -> str:
    return "Basic " + base64.b64encode(f"{app_key}:{master_secret}".encode()).decode()


def new_sendno() -> int:
    # JPush's sendno is a 32-bit signed int; 0 is its default, so never use it
    return secrets.randbelow(2**31 - 1) + 1


def build_body(
    aliases: list[str],
    title: str,
    desc: str,
    extras: dict[str, str],
    sendno: int,
    apns_production: bool,
    sound: str = "default",
) -> dict[str, Any]:
    return {
        "platform": "all",
        "audience": {"alias": aliases},
        "notification": {
            "alert": desc,
            "android": {"alert": desc, "title": title, "extras": extras},
            "ios": {
                "alert": {"title": title, "body": desc},
                "sound": sound,
                "badge": "+1",
                "mutable-content": True,
                "extras": extras,
            },
        },
        "options": {"sendno": sendno, "time_to_live": TIME_TO_LIVE_SECONDS, "apns_production": apns_production},
    }


class JPush:
    name = "jpush"
    counts_badges = False

    def __init__(self, url: str, app_key: str, master_secret: str, apns_production: bool, timeout: float) -> None:
        if not (url and app_key and master_secret):
            raise ProviderMisconfigured("JPush needs JPUSH_URL, JPUSH_APP_KEY and JPUSH_MASTER_SECRET")
        self.url = url
        self.authorization = basic_auth(app_key, master_secret)
        self.apns_production = apns_production
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
        extras = push_extras(conversation_id, msgs)
        sound = ios_sound(msgs)
        skipped: list[str] = []

        def push_part(aliases: list[str]) -> None:
            sendno = new_sendno()
            body = build_body(aliases, title, desc, extras, sendno, self.apns_production, sound)
            resp = post_json(self.url, body, self.timeout, {"Authorization": self.authorization})
            answer = answer_json(resp)
            if resp.status_code == 400 and (answer.get("error") or {}).get("code") == NO_DEVICE_FOR_AUDIENCE:
                skipped.extend(aliases)
                return
            raise_for_status(resp, "JPush")
            if str(answer.get("sendno")) != str(sendno):
                raise RejectedError(f"JPush answered sendno {answer.get('sendno')!r}, we sent {sendno}", "sendno")

        delivered = deliver_in_parts(chunks(user_ids, MAX_ALIASES), push_part)
        nobody = set(skipped)
        return PushResult(delivered=[u for u in delivered if u not in nobody], skipped=skipped)

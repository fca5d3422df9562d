"""Small helpers shared by the stack tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo import MongoClient

from app.cli.client import ImClient
from app.core.constants import LINUX
from app.services.auth import mint_token


def login(stack: Any, user_id: str, platform_id: int = LINUX) -> ImClient:
    return ImClient(stack.ws_url, user_id, platform_id, mint_token(user_id, platform_id))


def eventually(check: Callable[[], Any], timeout: float = 30.0, interval: float = 0.1) -> Any:
    """Poll until `check()` returns something truthy; returns it, or the last falsy value."""
    deadline = time.monotonic() + timeout
    result = check()
    while not result and time.monotonic() < deadline:
        time.sleep(interval)
        result = check()
    return result


ADMIN_SECRET = "test-admin-secret-0123456789abcdef0123"


def rest(port: int, path: str, body: dict[str, Any], token: str = "") -> dict[str, Any]:
    """One OpenIM-style REST call; returns the whole envelope."""
    import uuid

    import requests

    headers = {"operationID": uuid.uuid4().hex, **({"token": token} if token else {})}
    answer: dict[str, Any] = requests.post(
        f"http://127.0.0.1:{port}{path}", json=body, headers=headers, timeout=30
    ).json()
    return answer


def admin_token(port: int) -> str:
    answer = rest(port, "/auth/get_admin_token", {"secret": ADMIN_SECRET, "userID": "imAdmin"})
    return str(answer["data"]["token"])


def stored_in_mongo(mongo_url: str, conv: str) -> list[tuple[int, str]]:
    """(seq, clientMsgID) of every message MongoDB holds for the conversation, in seq order."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
    try:
        docs = client.get_default_database().msg.find({"doc_id": {"$regex": f"^{conv}:"}})
        return sorted(
            (int(slot["msg"]["seq"]), str(slot["msg"]["client_msg_id"]))
            for d in docs
            for slot in d["msgs"]
            if slot.get("msg")
        )
    finally:
        client.close()

"""MongoDB: the connections and every index of the project, in one place.

Collections follow OpenIM's models: `msg` (documents of 100 message slots), `seq` (per-conversation
block allocator), `seq_user`, `conversation` (one record per owner and conversation), `group`,
`group_member` and `user`. Nothing connects at import: the clients are made on first use.
"""

from __future__ import annotations

from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

from app.config import settings

_client: MongoClient[dict[str, Any]] | None = None
_quick_client: MongoClient[dict[str, Any]] | None = None


def get_db() -> Database[dict[str, Any]]:
    global _client
    if _client is None:
        _client = MongoClient(settings.mongo_url, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000)
    return _client.get_default_database()


def get_quick_db() -> Database[dict[str, Any]]:
    """The same database for lookups on a hot path that must give up within seconds while MongoDB
    is out rather than hold it up (their own pool, so short socket timeouts never hit slow writes)."""
    global _quick_client
    if _quick_client is None:
        _quick_client = MongoClient(
            settings.mongo_url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000, socketTimeoutMS=2000
        )
    return _quick_client.get_default_database()


def ping() -> None:
    get_db().command("ping")


def ensure_indexes() -> None:
    db = get_db()
    db.msg.create_index([("doc_id", ASCENDING)], unique=True)
    db.seq.create_index([("conversation_id", ASCENDING)], unique=True)
    db.conversation.create_index([("owner_user_id", ASCENDING), ("conversation_id", ASCENDING)], unique=True)
    db.conversation.create_index([("conversation_id", ASCENDING)])
    db.seq_user.create_index([("user_id", ASCENDING), ("conversation_id", ASCENDING)], unique=True)
    db.group_member.create_index([("group_id", ASCENDING), ("user_id", ASCENDING)], unique=True)
    db.group_member.create_index([("user_id", ASCENDING)])
    db.user.create_index([("user_id", ASCENDING)], unique=True)

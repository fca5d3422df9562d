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


# Every index of the project: (collection, key fields in order, unique).
INDEXES: list[tuple[str, tuple[str, ...], bool]] = [
    ("msg", ("doc_id",), True),
    ("seq", ("conversation_id",), True),
    ("conversation", ("owner_user_id", "conversation_id"), True),
    ("conversation", ("conversation_id",), False),
    ("seq_user", ("user_id", "conversation_id"), True),
    ("group_member", ("group_id", "user_id"), True),
    ("group_member", ("user_id",), False),
    ("user", ("user_id",), True),
]


def ensure_indexes() -> None:
    db = get_db()
    for collection, fields, unique in INDEXES:
        db[collection].create_index([(name, ASCENDING) for name in fields], unique=unique)


def existing_indexes() -> set[tuple[str, tuple[str, ...], bool]]:
    """(collection, key fields, unique) of every ascending index the database holds on our collections."""
    db = get_db()
    found: set[tuple[str, tuple[str, ...], bool]] = set()
    for collection in {name for name, _, _ in INDEXES}:
        for info in db[collection].index_information().values():
            fields = tuple(str(name) for name, direction in info["key"] if direction == ASCENDING)
            found.add((collection, fields, bool(info.get("unique", False))))
    return found

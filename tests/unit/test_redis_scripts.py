"""Scripts are named by strings: each name the code loads has its file, and each file is loaded."""

from __future__ import annotations

import re
from pathlib import Path

import redis

from app.store.redis import scripts

ROOT = Path(__file__).resolve().parents[2]


def loaded_names() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "app").rglob("*.py"):
        found.update(re.findall(r'scripts\.load\("(\w+)"', path.read_text(encoding="utf-8")))
    return found


def test_every_loaded_script_has_its_file_and_every_file_is_loaded() -> None:
    files = {path.stem for path in scripts.HERE.glob("*.lua")}
    assert loaded_names() == files


def test_a_script_is_registered_once_per_client() -> None:
    one, other = redis.Redis(), redis.Redis()
    assert scripts.load("commit", one) is scripts.load("commit", one)
    assert scripts.load("commit", other) is not scripts.load("commit", one)
    assert scripts.load("commit", other).registered_client is other

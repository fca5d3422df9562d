"""app/services/groups.joined_since: which groups a caller's join-groups version is missing."""

from __future__ import annotations

from app.services.groups import MAX_JOINED_SINCE, checksum, joined_since


def version(ids: list[str]) -> int:
    return checksum(sorted(ids))


def test_the_newest_groups_the_caller_lacks_are_found() -> None:
    newest_first = ["g4", "g3", "g2", "g1"]
    assert joined_since(version(["g1", "g2", "g3", "g4"]), newest_first) == []
    assert joined_since(version(["g1", "g2", "g3"]), newest_first) == ["g4"]
    assert joined_since(version(["g1"]), newest_first) == ["g4", "g3", "g2"]
    assert joined_since(version([]), newest_first) == newest_first


def test_a_list_that_is_not_ours_minus_the_newest_needs_the_whole_list() -> None:
    newest_first = ["g4", "g3", "g2", "g1"]
    assert joined_since(version(["g1", "g2", "g4"]), newest_first) is None  # g3 is older than g4
    assert joined_since(version(["g1", "g2", "g3", "g4", "gone"]), newest_first) is None  # a group left
    assert joined_since(0, newest_first) is None


def test_too_many_new_groups_need_the_whole_list() -> None:
    newest_first = [f"g{i:03}" for i in range(MAX_JOINED_SINCE + 5, 0, -1)]
    assert joined_since(version(newest_first[MAX_JOINED_SINCE:]), newest_first) == newest_first[:MAX_JOINED_SINCE]
    assert joined_since(version(newest_first[MAX_JOINED_SINCE + 1 :]), newest_first) is None

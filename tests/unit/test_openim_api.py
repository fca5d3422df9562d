from app.api.openim import empty_version


def test_empty_version_is_a_full_empty_answer() -> None:
    assert empty_version(sortVersion=0) == {
        "version": 0,
        "versionID": "",
        "full": True,
        "delete": [],
        "insert": [],
        "update": [],
        "sortVersion": 0,
    }

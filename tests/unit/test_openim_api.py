from app.api.openim import empty_version, peer_of


def test_peer_of_a_single_conversation() -> None:
    assert peer_of("si_alice_bob", "alice") == "bob"
    assert peer_of("si_alice_bob", "bob") == "alice"
    assert peer_of("si_a_b_c", "a") == "b_c"  # ids with underscores: split on the owner
    assert peer_of("si_a_b_c", "a_b") == "c"
    assert peer_of("si_me_me", "me") == "me"


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

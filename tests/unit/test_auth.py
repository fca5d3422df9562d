import jwt
import pytest

from app.auth import mint_token, parse_token
from app.errors import TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_MALFORMED, ImError


def test_round_trip() -> None:
    claims = parse_token(mint_token("alice", 5))
    assert (claims.user_id, claims.platform_id) == ("alice", 5)


def test_expired_token() -> None:
    with pytest.raises(ImError) as err:
        parse_token(mint_token("alice", 5, ttl_seconds=-60))
    assert err.value.code == TOKEN_EXPIRED


def test_wrong_secret_is_refused() -> None:
    token = mint_token("alice", 5, secret="another-secret-that-is-long-enough-0123")
    with pytest.raises(ImError) as err:
        parse_token(token)
    assert err.value.code in (TOKEN_INVALID, TOKEN_MALFORMED)


@pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c"])
def test_garbage_tokens(token: str) -> None:
    with pytest.raises(ImError) as err:
        parse_token(token)
    assert err.value.code in (TOKEN_INVALID, TOKEN_MALFORMED)


def test_claims_must_be_typed() -> None:
    from app.config import settings

    token = jwt.encode({"userID": 7, "platformID": "x", "exp": 4102444800}, settings.token_secret, algorithm="HS256")
    with pytest.raises(ImError) as err:
        parse_token(token)
    assert err.value.code == TOKEN_INVALID


def test_alg_none_is_refused() -> None:
    token = jwt.encode({"userID": "alice", "platformID": 5, "exp": 4102444800}, None, algorithm="none")
    with pytest.raises(ImError):
        parse_token(token)

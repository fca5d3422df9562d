import os
import stat
from dataclasses import replace
from pathlib import Path

import jwt
import pytest

from app.config import MIN_SECRET_BYTES, Settings, resolve_secrets, secrets, secrets_path, settings
from app.core.errors import TOKEN_EXPIRED, TOKEN_INVALID, TOKEN_MALFORMED, ImError
from app.services.auth import ADMIN_PLATFORM, mint_token, parse_token

GOOD_TOKEN_SECRET = "t" * MIN_SECRET_BYTES
GOOD_ADMIN_SECRET = "a" * MIN_SECRET_BYTES


def test_round_trip() -> None:
    claims = parse_token(mint_token("alice", 5))
    assert (claims.user_id, claims.platform_id, claims.admin) == ("alice", 5, False)


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
    token = jwt.encode({"userID": 7, "platformID": "x", "exp": 4102444800}, secrets().token_secret, algorithm="HS256")
    with pytest.raises(ImError) as err:
        parse_token(token)
    assert err.value.code == TOKEN_INVALID


def test_alg_none_is_refused() -> None:
    token = jwt.encode({"userID": "alice", "platformID": 5, "exp": 4102444800}, "", algorithm="none")
    with pytest.raises(ImError):
        parse_token(token)


# --- user and admin keys ---------------------------------------------------------------------------


def test_admin_token_round_trip() -> None:
    claims = parse_token(mint_token("imAdmin", ADMIN_PLATFORM, admin=True))
    assert (claims.user_id, claims.platform_id, claims.admin) == ("imAdmin", ADMIN_PLATFORM, True)


def test_user_key_token_claiming_admin_is_refused() -> None:
    """Whoever holds TOKEN_SECRET (e.g. a service minting user tokens) cannot make an admin token."""
    claims = {"userID": "imAdmin", "platformID": ADMIN_PLATFORM, "exp": 4102444800, "admin": True}
    with pytest.raises(ImError) as err:
        parse_token(jwt.encode(claims, secrets().token_secret, algorithm="HS256"))
    assert err.value.code == TOKEN_INVALID


def test_admin_key_token_is_only_accepted_as_admin() -> None:
    claims = {"userID": "alice", "platformID": 5, "exp": 4102444800}
    with pytest.raises(ImError) as err:
        parse_token(jwt.encode(claims, secrets().admin_token_key, algorithm="HS256"))
    assert err.value.code == TOKEN_INVALID
    assert secrets().admin_token_key not in (secrets().admin_secret, secrets().token_secret)


def test_admin_token_lives_on_the_admin_platform() -> None:
    with pytest.raises(ImError) as err:
        parse_token(mint_token("imAdmin", 5, admin=True))
    assert err.value.code == TOKEN_INVALID


def test_issued_at_has_millisecond_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    """A force logout revokes tokens issued before it, even within the same second: iat is never rounded up."""
    monkeypatch.setattr("app.services.auth.time.time", lambda: 1_900_000_000.5679)
    claims = jwt.decode(mint_token("alice", 5), options={"verify_signature": False})
    assert claims["iat"] == 1_900_000_000.567


# --- secrets ----------------------------------------------------------------------------------------


def configured(tmp_path: Path, **values: str) -> Settings:
    values = {"app_env": "production", "token_secret_env": "", "admin_secret_env": "", **values}
    return replace(
        settings,
        data_dir=str(tmp_path / "data"),
        app_env=values["app_env"],
        token_secret_env=values["token_secret_env"],
        admin_secret_env=values["admin_secret_env"],
    )


def test_no_secret_has_a_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("TOKEN_SECRET")
    monkeypatch.delenv("ADMIN_SECRET")
    monkeypatch.delenv("APP_ENV", raising=False)
    monkeypatch.setenv("APP_DATA_DIR", str(tmp_path))
    fresh = Settings()
    assert (fresh.token_secret_env, fresh.admin_secret_env, fresh.app_env) == ("", "", "production")
    with pytest.raises(SystemExit, match="TOKEN_SECRET is not set"):
        resolve_secrets(fresh)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({}, "TOKEN_SECRET is not set; ADMIN_SECRET is not set"),
        ({"token_secret_env": GOOD_TOKEN_SECRET}, "ADMIN_SECRET is not set"),
        ({"token_secret_env": "short", "admin_secret_env": GOOD_ADMIN_SECRET}, "TOKEN_SECRET is shorter than 32"),
        ({"token_secret_env": GOOD_TOKEN_SECRET, "admin_secret_env": "x" * 31}, "ADMIN_SECRET is shorter than 32"),
        ({"token_secret_env": GOOD_TOKEN_SECRET, "admin_secret_env": GOOD_TOKEN_SECRET}, "are the same"),
    ],
)
def test_production_refuses_unset_short_or_equal_secrets(tmp_path: Path, values: dict[str, str], message: str) -> None:
    with pytest.raises(SystemExit) as stop:
        resolve_secrets(configured(tmp_path, **values))
    assert message in str(stop.value)
    assert "APP_ENV=development" in str(stop.value) and "python -m app up" in str(stop.value)
    assert not secrets_path(configured(tmp_path)).exists(), "production never generates secrets by itself"


def test_good_secrets_from_the_environment(tmp_path: Path) -> None:
    got = resolve_secrets(configured(tmp_path, token_secret_env=GOOD_TOKEN_SECRET, admin_secret_env=GOOD_ADMIN_SECRET))
    assert (got.token_secret, got.admin_secret, got.source) == (GOOD_TOKEN_SECRET, GOOD_ADMIN_SECRET, "environment")


def test_unknown_app_env_is_refused(tmp_path: Path) -> None:
    good = {"token_secret_env": GOOD_TOKEN_SECRET, "admin_secret_env": GOOD_ADMIN_SECRET}
    with pytest.raises(SystemExit, match="APP_ENV must be one of"):
        resolve_secrets(configured(tmp_path, app_env="prod", **good))


def test_generated_secrets_are_random_private_and_kept(tmp_path: Path) -> None:
    cfg = configured(tmp_path)
    first = resolve_secrets(cfg, generate=True)  # what `python -m app up` does
    path = secrets_path(cfg)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(first.token_secret) >= MIN_SECRET_BYTES and len(first.admin_secret) >= MIN_SECRET_BYTES
    assert first.token_secret != first.admin_secret
    # later processes of the same checkout (e.g. `python -m app token`) find the same ones, in production too
    again = resolve_secrets(cfg)
    assert (again.token_secret, again.admin_secret, again.source) == (first.token_secret, first.admin_secret, str(path))
    other = resolve_secrets(configured(tmp_path / "elsewhere"), generate=True)
    assert other.token_secret != first.token_secret


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    resolve_secrets(configured(tmp_path), generate=True)
    got = resolve_secrets(configured(tmp_path, token_secret_env=GOOD_TOKEN_SECRET))
    assert got.token_secret == GOOD_TOKEN_SECRET and got.admin_secret != GOOD_ADMIN_SECRET


def test_development_generates_and_tolerates_short_secrets(tmp_path: Path) -> None:
    dev = configured(tmp_path, app_env="development")
    assert resolve_secrets(dev).token_secret == resolve_secrets(dev).token_secret
    short = resolve_secrets(replace(dev, token_secret_env="short", admin_secret_env="also-short"))
    assert (short.token_secret, short.admin_secret) == ("short", "also-short")

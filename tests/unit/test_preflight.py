"""The start-up checks' rules (app/ops/preflight.py): what each finds, and when a finding refuses."""

from __future__ import annotations

from dataclasses import replace

import pytest

from app.config import Settings, settings
from app.ops.preflight import (
    Facts,
    check_broker,
    check_indexes,
    check_secrets,
    check_transfer_shards,
    evaluate,
    is_redis_url,
    refusal_message,
    refusals,
    secret_problem,
)

GOOD = "k3J9-x_Qp2vL8mZr4TnW7yB1cF6hD0sA5eG"  # 35 random-looking bytes


def cfg(**values: object) -> Settings:
    base = {"app_env": "production", "app_env_explicit": False, "redis_cluster": False, "broker_url": ""}
    return replace(settings, **{**base, **values})  # type: ignore[arg-type]


def test_the_environment_tells_an_explicit_app_env_from_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APP_ENV", raising=False)
    assert (Settings().app_env, Settings().app_env_explicit) == ("production", False)
    monkeypatch.setenv("APP_ENV", "production")
    assert (Settings().app_env, Settings().app_env_explicit) == ("production", True)


def test_broker_on_the_data_redis_without_aof_is_found() -> None:
    facts = Facts(broker_is_redis=True, broker_aof=False, broker_is_data_redis=True)
    [finding] = check_broker(cfg(), facts)
    assert finding.check == "broker-persistence" and "appendonly no" in finding.message
    assert "is the data Redis" in finding.message and not finding.always


def test_a_broker_redis_of_its_own_without_aof_is_found_too() -> None:
    [finding] = check_broker(cfg(), Facts(broker_is_redis=True, broker_aof=False, broker_is_data_redis=False))
    assert "a restart loses every queued message" in finding.message


@pytest.mark.parametrize(
    "facts",
    [
        Facts(broker_is_redis=True, broker_aof=True, broker_is_data_redis=True),  # shared but durable
        Facts(broker_is_redis=True, broker_aof=None),  # not readable: reported apart, not guessed
        Facts(broker_is_redis=False),  # RabbitMQ
    ],
)
def test_durable_or_rabbitmq_or_unknown_brokers_pass(facts: Facts) -> None:
    assert check_broker(cfg(), facts) == []


def test_a_cluster_without_a_broker_of_its_own_always_refuses() -> None:
    config = cfg(redis_cluster=True, broker_url="", app_env="development")
    [finding] = check_broker(config, Facts())
    assert finding.always and "BROKER_URL" in finding.message
    assert refusals(config, [finding]) == [finding]
    assert check_broker(cfg(redis_cluster=True, broker_url="amqp://h//"), Facts()) == []


@pytest.mark.parametrize(
    ("secret", "problem"),
    [
        ("short", "shorter than 32 bytes"),
        ("test-token-secret-0123456789abcdef0123", "contains 'test'"),
        ("my-example-secret-for-the-readme-0123456", "contains 'example'"),
        ("abababababababababababababababababab", "fewer than 8 different characters"),
        ("x" * 40, "fewer than 8 different characters"),
    ],
)
def test_dev_and_placeholder_secrets_are_named(secret: str, problem: str) -> None:
    found = secret_problem(secret)
    assert found is not None and problem in found


def test_random_secrets_pass_and_equal_ones_do_not() -> None:
    assert secret_problem(GOOD) is None
    assert check_secrets(GOOD, GOOD[::-1]) == []
    [same] = check_secrets(GOOD, GOOD)
    assert "the same" in same.message


def test_transfer_shards_must_match_the_recorded_value() -> None:
    assert check_transfer_shards(4, None) == []
    assert check_transfer_shards(4, 4) == []
    [finding] = check_transfer_shards(3, 4)
    assert finding.always and "TRANSFER_SHARDS is 3 here but 4" in finding.message


def test_missing_indexes_are_listed() -> None:
    assert check_indexes([]) == [] and check_indexes(None) == []
    [finding] = check_indexes(["msg(doc_id unique)"])
    assert "msg(doc_id unique)" in finding.message


def test_warnings_refuse_only_with_app_env_production_set_explicitly() -> None:
    facts = Facts(broker_is_redis=True, broker_aof=False, broker_is_data_redis=True, missing_indexes=["seq(x)"])
    for config, refused in (
        (cfg(app_env="production", app_env_explicit=False), 0),  # the default: warnings only
        (cfg(app_env="development", app_env_explicit=True), 0),
        (cfg(app_env="production", app_env_explicit=True), 3),  # broker, secrets, indexes
    ):
        findings = evaluate(config, facts, ("short", GOOD))
        assert len(findings) == 3
        assert len(refusals(config, findings)) == refused
    message = refusal_message("push", evaluate(cfg(), facts))
    assert message.startswith("refusing to start the push:") and "[mongo-indexes]" in message


def test_which_broker_urls_are_redis() -> None:
    assert is_redis_url("redis://h:6379/0") and is_redis_url("rediss://h/0")
    assert not is_redis_url("amqp://guest:guest@h:5672//")

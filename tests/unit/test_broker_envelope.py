"""The Redis broker's envelopes (app/pipeline/broker_redis.py): written and read with compact_json,
as kombu's own JSON functions would read and write them, typed values included."""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.utils import json as kombu_json

from app.pipeline.broker_redis import envelope_dumps, envelope_loads


def kombu_envelope(**headers: Any) -> dict[str, Any]:
    """A task message as kombu's virtual channel hands it to the transport's `_put`."""
    return {
        "body": "W1t7InNpX2EiOiBbXX1dLCB7fSwge31d",
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {"lang": "py", "task": "push.batch", "id": "6a0c", "eta": None, "retries": 0, **headers},
        "properties": {
            "correlation_id": "6a0c",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": "push"},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": "d1e2",
        },
    }


def test_the_transport_writes_and_reads_envelopes_with_compact_json() -> None:
    names = vars(kombu_redis)  # what the transport's methods call by name
    assert names["dumps"] is envelope_dumps and names["loads"] is envelope_loads


def test_an_envelope_reads_back_as_kombu_reads_it_and_kombu_reads_ours() -> None:
    message = kombu_envelope(argsrepr="[<1 arguments>]", note="héllo ☃")
    written = envelope_dumps(message)
    assert isinstance(written, bytes) and len(written) < len(kombu_json.dumps(message))  # no spaces, UTF-8
    assert kombu_json.loads(written.decode()) == message == json.loads(written)
    assert envelope_loads(kombu_json.dumps(message)) == message
    # what QoS.append records for an unacknowledged message, and restores from
    record = [message, "", "push"]
    assert envelope_loads(envelope_dumps(record).decode()) == record


def test_typed_values_go_through_kombus_own_functions() -> None:
    sent_at = datetime.datetime(2026, 12, 1, 21, 0, 0, tzinfo=datetime.UTC)
    message = kombu_envelope(expires=sent_at, nothing=None)
    written = envelope_dumps(message)
    assert b"__type__" in written  # kombu's typed spelling, which orjson would have written as a plain string
    assert envelope_loads(written) == message == kombu_json.loads(written.decode())
    assert envelope_loads(kombu_json.dumps(message)) == message


def test_what_neither_can_spell_still_fails_as_before() -> None:
    class Opaque:
        pass

    for codec in (envelope_dumps, kombu_json.dumps):
        try:
            codec({"x": Opaque()})
        except TypeError:
            continue
        raise AssertionError(f"{codec.__name__} wrote an object it cannot spell")


def test_an_integer_beyond_64_bits_and_a_uuid_string_survive() -> None:
    message = kombu_envelope(big=2**70, id=str(uuid.uuid4()))
    assert envelope_loads(envelope_dumps(message)) == message

"""The web app's error handlers: whatever a route does, the answer is OpenIM's envelope."""

from __future__ import annotations

from types import SimpleNamespace

from flask import Flask

from app.api.app import create_app
from app.core.errors import ARGS_ERROR, SERVER_INTERNAL, TOKEN_MALFORMED, ImError


def web_app() -> Flask:
    node = SimpleNamespace(
        hub=SimpleNamespace(node_id="n", connection_count=lambda: 0), sockets=SimpleNamespace(open=0)
    )
    app = create_app(node)

    def refused() -> str:
        raise ImError(ARGS_ERROR, "no")

    def broken() -> str:
        raise RuntimeError("a bug")

    app.add_url_rule("/refused", view_func=refused)
    app.add_url_rule("/broken", view_func=broken)
    return app


def test_errors_answer_the_envelope() -> None:
    client = web_app().test_client()
    refused = client.get("/refused")
    assert refused.status_code == 200
    assert refused.json == {"errCode": ARGS_ERROR, "errMsg": "no", "errDlt": "", "data": None}
    broken = client.get("/broken")
    assert broken.status_code == 200
    assert broken.json == {"errCode": SERVER_INTERNAL, "errMsg": "internal server error", "errDlt": "", "data": None}
    missing = client.get("/missing")
    assert missing.status_code == 404 and missing.json == {
        "errCode": 404,
        "errMsg": "Not Found",
        "errDlt": "",
        "data": None,
    }


def test_a_blueprint_route_answers_the_envelope() -> None:
    """The admin blueprint has no handler of its own: the app's answers (no token: refused before Redis)."""
    answer = web_app().test_client().post("/auth/get_user_token", data="not json")
    assert answer.status_code == 200 and answer.json is not None and answer.json["errCode"] == TOKEN_MALFORMED

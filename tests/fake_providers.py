"""Local HTTP servers standing in for the offline push providers: the webhook, JPush, Getui and FCM.

Each one checks a request as its provider documents it (auth, path, required fields, limits) and
answers as the provider does; a request that breaks a rule is answered with the provider's error
and recorded in `violations`, so a test can assert there were none. Every fake can also fail on
demand: `fail_next` requests answered with `fail_status`, `stall_next` requests answered only after
`stall_seconds` (past the client's timeout).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs


class Answer(Exception):
    """Raised by a check to answer the request with this status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class FakeServer:
    PROVIDER = ""  # OFFLINE_PUSH_PROVIDER
    ENV: dict[str, str] = {}  # its other variables -> the attribute holding each value

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts = 0  # every request that reached the server
        self.stalled = 0
        self.fail_next = 0
        self.fail_status = 503
        self.stall_next = 0
        self.stall_seconds = 3.0
        self.fail_after = 0  # answer this many requests normally before failing or stalling
        self.violations: list[str] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                status, body = fake._handle(self.path, dict(self.headers.items()), raw)
                payload = json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a stall)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.attempts += 1
            stall = failing = False
            if self.fail_after > 0:
                self.fail_after -= 1
            elif self.stall_next > 0:
                stall = True
                self.stall_next -= 1
                self.stalled += 1
            elif self.fail_next > 0:
                failing = True
                self.fail_next -= 1
        if stall:
            time.sleep(self.stall_seconds)
            return 503, self.error_body(503, "stalled")
        if failing:
            return self.fail_status, self.error_body(self.fail_status, "failure on demand")
        try:
            body = self.decode_body(raw)
        except ValueError:
            return self.violation(f"{path}: body is not JSON")
        try:
            with self.lock:
                return self.handle(path, {k.lower(): v for k, v in headers.items()}, body)
        except Answer as answer:
            return answer.status, answer.body

    def decode_body(self, raw: bytes) -> Any:
        return json.loads(raw or b"null")

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        raise NotImplementedError

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def violation(self, message: str) -> tuple[int, dict[str, Any]]:
        self.violations.append(message)
        return 400, self.error_body(400, message)

    def require(self, condition: bool, message: str) -> None:
        if not condition:
            self.violations.append(message)
            raise Answer(400, self.error_body(400, message))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def env(self) -> dict[str, str]:
        """The variables that point an offline worker at this fake."""
        return {
            "OFFLINE_PUSH_PROVIDER": self.PROVIDER,
            **{name: getattr(self, attr) for name, attr in self.ENV.items()},
        }


class FakeProvider(FakeServer):
    """The webhook (OFFLINE_PUSH_URL): records each request's body, answers {"ok": true}."""

    PROVIDER = "webhook"
    ENV = {"OFFLINE_PUSH_URL": "url"}

    def __init__(self) -> None:
        super().__init__()
        self.received: list[dict[str, Any]] = []
        self.url = f"{self.base_url}/push"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"ok": False}

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        self.received.append(body if isinstance(body, dict) else {})
        return 200, {"ok": True}

    def for_user(self, user_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [r for r in self.received if user_id in r.get("userIDs", [])]

    def wait_for_user(self, user_id: str, msg_count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.for_user(user_id)
            if sum(len(r["msgs"]) for r in got) >= msg_count:
                return got
            time.sleep(0.1)
        return self.for_user(user_id)


def _strings(value: Any, most: int) -> bool:
    return isinstance(value, list) and 1 <= len(value) <= most and all(isinstance(v, str) and v for v in value)


class FakeJPush(FakeServer):
    """POST /v3/push with `Authorization: Basic base64(appKey:masterSecret)`."""

    PROVIDER = "jpush"
    ENV = {"JPUSH_URL": "url", "JPUSH_APP_KEY": "app_key", "JPUSH_MASTER_SECRET": "master_secret"}

    def __init__(self, app_key: str, master_secret: str) -> None:
        self.app_key, self.master_secret = app_key, master_secret
        self.auth = "Basic " + base64.b64encode(f"{app_key}:{master_secret}".encode()).decode()
        self.pushes: list[dict[str, Any]] = []  # accepted push bodies
        self.wrong_sendno_next = 0
        self.unknown_aliases: set[str] = set()  # aliases with no device (error 1011 when all are)
        super().__init__()
        self.url = f"{self.base_url}/v3/push"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        code = {400: 1003, 401: 1004, 429: 2002}.get(status, 1000)
        return {"error": {"code": code, "message": message}, "msg_id": "0"}

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        if path != "/v3/push":
            return self.violation(f"unknown path {path}")
        if headers.get("authorization") != self.auth:
            self.violations.append("bad Authorization")
            return 401, {"error": {"code": 1004, "message": "Authen failed"}}
        self.require(isinstance(body, dict), "body must be a push object")
        platform = body.get("platform")
        self.require(platform == "all" or _strings(platform, 4), "platform must be 'all' or a list of platforms")
        audience = body.get("audience")
        self.require(isinstance(audience, dict) and set(audience) == {"alias"}, "audience must be {alias: [...]}")
        aliases = audience["alias"]
        self.require(_strings(aliases, 1000), "audience.alias: 1 to 1000 non-empty strings")
        note = body.get("notification")
        self.require(isinstance(note, dict) and bool(note), "notification is required")
        android, ios = note.get("android", {}), note.get("ios", {})
        self.require(isinstance(android.get("alert"), str), "notification.android.alert must be a string")
        self.require(isinstance(ios.get("alert"), (str, dict)), "notification.ios.alert must be a string or dict")
        for extras in (android.get("extras"), ios.get("extras")):
            self.require(extras is None or isinstance(extras, dict), "extras must be a JSON object")
        options = body.get("options", {})
        sendno = options.get("sendno", 0)
        self.require(isinstance(sendno, int) and 0 <= sendno < 2**31, "options.sendno must be a 32-bit int")
        self.require(isinstance(options.get("apns_production", False), bool), "apns_production must be a bool")
        if all(a in self.unknown_aliases for a in aliases):
            return 400, {"error": {"code": 1011, "message": "cannot find user by this audience"}, "msg_id": "1"}
        self.pushes.append(body)
        if self.wrong_sendno_next > 0:
            self.wrong_sendno_next -= 1
            sendno += 1
        return 200, {"sendno": str(sendno), "msg_id": str(uuid.uuid4().int % 10**12)}

    def aliases(self) -> list[str]:
        with self.lock:
            return [a for push in self.pushes for a in push["audience"]["alias"]]

    def pushes_for(self, conversation_id: str) -> list[dict[str, Any]]:
        with self.lock:
            return [
                p for p in self.pushes if p["notification"]["android"]["extras"]["conversationID"] == conversation_id
            ]


class FakeGetui(FakeServer):
    """RestAPI v2 under /v2/{appId}: /auth, /push/single/alias, /push/list/message, /push/list/alias."""

    PROVIDER = "getui"
    ENV = {
        "GETUI_URL": "url",
        "GETUI_APP_ID": "app_id",
        "GETUI_APP_KEY": "app_key",
        "GETUI_MASTER_SECRET": "master_secret",
    }

    def __init__(self, app_id: str, app_key: str, master_secret: str) -> None:
        self.app_id, self.app_key, self.master_secret = app_id, app_key, master_secret
        self.auth_calls = 0
        self.tokens: set[str] = set()  # tokens currently valid
        self.singles: list[dict[str, Any]] = []
        self.tasks: dict[str, dict[str, Any]] = {}  # taskid -> the message it was created with
        self.list_pushes: list[tuple[str, list[str]]] = []  # (taskid, aliases) per /push/list/alias
        self.refused_tokens = 0
        super().__init__()
        self.url = f"{self.base_url}/v2"

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"code": 10005 if status == 400 else 20000 + status, "msg": message}

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        prefix = f"/v2/{self.app_id}"
        if not path.startswith(prefix + "/"):
            return self.violation(f"path {path} is not under {prefix}")
        self.require(isinstance(body, dict), "body must be a JSON object")
        endpoint = path[len(prefix) :]
        if endpoint == "/auth":
            return self._auth(body)
        if headers.get("token") not in self.tokens:
            self.refused_tokens += 1
            return 200, {"code": 10001, "msg": "token expired or invalid"}
        if endpoint == "/push/single/alias":
            self._check_message(body)
            self.require(_strings(body.get("audience", {}).get("alias"), 1), "single push: exactly one alias")
            self.singles.append(body)
            alias = body["audience"]["alias"][0]
            return 200, {"code": 0, "msg": "success", "data": {"RASS_1": {alias: "successed_offline"}}}
        if endpoint == "/push/list/message":
            self._check_message(body)
            self.require("audience" not in body, "list message: the audience comes with /push/list/alias")
            taskid = f"RASL_{uuid.uuid4().hex[:16]}"
            self.tasks[taskid] = body
            return 200, {"code": 0, "msg": "success", "data": {"taskid": taskid}}
        if endpoint == "/push/list/alias":
            taskid = body.get("taskid")
            self.require(taskid in self.tasks, f"unknown taskid {taskid!r}")
            aliases = body.get("audience", {}).get("alias")
            self.require(_strings(aliases, 1000), "list push: 1 to 1000 aliases")
            self.require(isinstance(body.get("is_async", False), bool), "is_async must be a bool")
            self.list_pushes.append((str(taskid), list(aliases)))
            return 200, {"code": 0, "msg": "success", "data": {}}
        return self.violation(f"unknown endpoint {endpoint}")

    def _auth(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        timestamp = body.get("timestamp")
        self.require(body.get("appkey") == self.app_key, "wrong appkey")
        self.require(isinstance(timestamp, (str, int)) and str(timestamp).isdigit(), "timestamp: ms since the epoch")
        self.require(abs(int(str(timestamp)) - time.time() * 1000) < 600_000, "timestamp is not now, in ms")
        expected = hashlib.sha256(f"{self.app_key}{timestamp}{self.master_secret}".encode()).hexdigest()
        if body.get("sign") != expected:
            self.violations.append("wrong sign")
            return 200, {"code": 10004, "msg": "sign error"}
        self.auth_calls += 1
        token = uuid.uuid4().hex
        self.tokens.add(token)
        expire = int(time.time() * 1000) + 24 * 3600 * 1000
        return 200, {"code": 0, "msg": "success", "data": {"expire_time": str(expire), "token": token}}

    def _check_message(self, body: dict[str, Any]) -> None:
        rid = body.get("request_id")
        self.require(isinstance(rid, str) and 10 <= len(rid) <= 32, "request_id: 10 to 32 characters")
        note = body.get("push_message", {}).get("notification", {})
        for key in ("title", "body", "click_type"):
            self.require(isinstance(note.get(key), str) and bool(note[key]), f"push_message.notification.{key}")
        ttl = body.get("settings", {}).get("ttl", 3600000)
        self.require(isinstance(ttl, int) and -1 <= ttl <= 3 * 24 * 3600 * 1000, "settings.ttl out of range")


class FakeFcm(FakeServer):
    """FCM HTTP v1: POST /v1/projects/{project}/messages:send with `Authorization: Bearer <token>`."""

    PROVIDER = "fcm"
    ENV = {"FCM_URL": "url", "FCM_PROJECT_ID": "project_id", "FCM_ACCESS_TOKEN": "access_token"}

    def __init__(self, project_id: str, access_token: str) -> None:
        self.project_id = project_id
        self.access_token = access_token
        self.messages: list[dict[str, Any]] = []  # accepted `message` objects
        self.unregistered: set[str] = set()  # device tokens FCM no longer knows
        super().__init__()
        self.url = self.base_url

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        names = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED"}
        fcm = {400: "INVALID_ARGUMENT", 429: "QUOTA_EXCEEDED", 503: "UNAVAILABLE", 500: "INTERNAL"}
        return {
            "error": {
                "code": status,
                "message": message,
                "status": names.get(status, "UNAVAILABLE" if status == 503 else "INTERNAL"),
                "details": [
                    {
                        "@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError",
                        "errorCode": fcm.get(status, "UNSPECIFIED_ERROR"),
                    }
                ],
            }
        }

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        if path != f"/v1/projects/{self.project_id}/messages:send":
            return self.violation(f"unknown path {path}")
        if headers.get("authorization") != f"Bearer {self.access_token}":
            return 401, self.error_body(401, "Request had invalid authentication credentials.")
        self.require(isinstance(body, dict) and set(body) <= {"message", "validate_only"}, "body is {message}")
        message = body.get("message")
        self.require(isinstance(message, dict), "message is required")
        targets = [k for k in ("token", "topic", "condition") if k in message]
        self.require(targets == ["token"], "exactly one target, a device token")
        self.require(isinstance(message["token"], str) and bool(message["token"]), "token must be a string")
        note = message.get("notification", {})
        self.require(set(note) <= {"title", "body", "image"}, "notification: title, body, image only")
        self.require(all(isinstance(v, str) for v in note.values()), "notification values must be strings")
        data = message.get("data", {})
        self.require(
            isinstance(data, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()),
            "data must map strings to strings",
        )
        aps = message.get("apns", {}).get("payload", {}).get("aps", {})
        self.require(isinstance(aps, dict), "apns.payload.aps must be an object")
        if message["token"] in self.unregistered:
            answer = self.error_body(404, "Requested entity was not found.")
            answer["error"]["details"][0]["errorCode"] = "UNREGISTERED"
            return 404, answer
        self.messages.append(message)
        return 200, {"name": f"projects/{self.project_id}/messages/{uuid.uuid4().int % 10**16}"}

    def tokens_sent(self, conversation_id: str | None = None) -> list[str]:
        with self.lock:
            return [
                m["token"]
                for m in self.messages
                if conversation_id is None or m.get("data", {}).get("conversationID") == conversation_id
            ]


def labelled_metric(port: int, name: str, **labels: str) -> float:
    """A labelled counter's value from a Prometheus endpoint (0 when not exported yet)."""
    import requests

    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name)}\{{{re.escape(want)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


class FakeGoogleOAuth(FakeServer):
    """Google's OAuth2 token endpoint for service accounts (RFC 7523): a form POST with
    grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer and an RS256-signed `assertion` (iss, scope,
    aud = Google's token endpoint whatever token_uri the key names, iat, exp), answered
    {access_token, expires_in, token_type}. `on_issue` hears every token handed out (so the fake FCM
    can accept it)."""

    GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
    AUDIENCE = "https://oauth2.googleapis.com/token"

    def __init__(self, public_key_pem: bytes, client_email: str, expires_in: int = 3600) -> None:
        super().__init__()
        self.public_key_pem = public_key_pem
        self.client_email = client_email
        self.expires_in = expires_in
        self.token_uri = f"{self.base_url}/token"
        self.issued: list[str] = []
        self.scopes: list[str] = []
        self.on_issue: Callable[[str], None] = lambda token: None

    def decode_body(self, raw: bytes) -> Any:
        return {k: v[0] for k, v in parse_qs(raw.decode()).items()}

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": "invalid_grant" if status == 400 else "temporarily_unavailable", "error_description": message}

    def handle(self, path: str, headers: dict[str, str], body: Any) -> tuple[int, dict[str, Any]]:
        import jwt

        self.require(path == "/token", f"unknown path {path}")
        self.require(body.get("grant_type") == self.GRANT, "grant_type must be jwt-bearer")
        try:
            claims = jwt.decode(
                body.get("assertion", ""), self.public_key_pem, algorithms=["RS256"], audience=self.AUDIENCE
            )
        except jwt.PyJWTError as exc:
            return self.violation(f"bad assertion: {exc}")
        self.require(claims.get("iss") == self.client_email, "iss must be the service account")
        self.scopes.append(str(claims.get("scope")))
        token = f"ya29.fake-{len(self.issued) + 1}"
        self.issued.append(token)
        self.on_issue(token)
        return 200, {"access_token": token, "expires_in": self.expires_in, "token_type": "Bearer"}


class FakeWebhooks(FakeServer):
    """An integrator's endpoint for OpenIM's webhooks: POST <url>/<callbackCommand>. Records each call by
    command; `answers[command]` decides the answer from the body (default: go on), and `stall` /
    `fail` make the calls a function picks hang past the caller's timeout or answer 500."""

    def __init__(self) -> None:
        super().__init__()
        self.url = f"{self.base_url}/im"
        self.calls: dict[str, list[dict[str, Any]]] = {}
        self.answers: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {}
        self.stall_if: Callable[[str, dict[str, Any]], bool] = lambda command, body: False
        self.fail_if: Callable[[str, dict[str, Any]], bool] = lambda command, body: False

    def error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"errCode": status, "errMsg": message}

    def _handle(self, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, dict[str, Any]]:
        command = path.rsplit("/", 1)[-1]
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            return self.violation(f"{path}: body is not JSON")
        with self.lock:
            self.attempts += 1
            self.calls.setdefault(command, []).append(body)
            if not path.startswith("/im/"):
                self.violations.append(f"unknown path {path}")
            if body.get("callbackCommand") != command:
                self.violations.append(f"{path}: callbackCommand {body.get('callbackCommand')!r}")
            if not headers.get("operationID"):
                self.violations.append(f"{path}: no operationID header")
            stall, fail = self.stall_if(command, body), self.fail_if(command, body)
            answer = self.answers.get(command)
        if stall:
            time.sleep(self.stall_seconds)
            return 200, {"actionCode": 0, "nextCode": 0}
        if fail:
            return 500, {"errCode": 500, "errMsg": "failure on demand"}
        return 200, answer(body) if answer else {"actionCode": 0, "errCode": 0, "errMsg": "", "nextCode": 0}

    def of(self, command: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.calls.get(command, []))

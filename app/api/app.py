"""The gateway's web app: the REST blueprints behind one envelope, and the node's probes.

app/gateway.py adds its websocket route to this app; the probes read the node's state through
the small `Node` interface, so this layer does not import the gateway.
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any, Protocol

from flask import Flask, Response, jsonify
from flask_cors import CORS
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.api.admin import admin_api
from app.api.envelope import register_error_handlers
from app.api.groups import group_api
from app.api.msg import msg_api
from app.api.openim import openim_api
from app.api.third import third_api
from app.config import settings
from app.ops import metrics
from app.services import dispatch
from app.store.mongo import client as mongo
from app.store.redis.client import get_redis
from app.ws.publish import queue_depths

if TYPE_CHECKING:
    from app.ws.connections import Hub
    from app.ws.sockets import SocketGuard

log = logging.getLogger(__name__)

# OpenIM's api service (openimsdk/tools mw.CorsHandler) answers every origin, method and header and
# exposes these; browsers running a web SDK on another origin need the preflight answered.
CORS_EXPOSE_HEADERS = [
    "Content-Length",
    "Access-Control-Allow-Origin",
    "Access-Control-Allow-Headers",
    "Cache-Control",
    "Content-Language",
    "Content-Type",
    "Expires",
    "Last-Modified",
    "Pragma",
]
CORS_MAX_AGE = 172800  # seconds, as OpenIM's


def cors_origins() -> str | list[str]:
    """CORS_ALLOW_ORIGINS: "*" (default) or a comma-separated list of origins."""
    raw = settings.cors_allow_origins.strip()
    origins = [o.strip() for o in raw.split(",") if o.strip()]
    return "*" if not origins or "*" in origins else origins


class Node(Protocol):
    """What the probes report of a gateway node (app.gateway.Gateway is one)."""

    hub: Hub
    sockets: SocketGuard
    draining: bool
    push_subscribed: bool


def create_app(node: Node) -> Flask:
    app = Flask(__name__)
    register_error_handlers(app)
    for blueprint in (admin_api, openim_api, msg_api, group_api, third_api):
        app.register_blueprint(blueprint)
    # REST sends and notifications share the node's batcher with websocket sends
    dispatch.use_batcher(getattr(node, "batcher", None))
    # Every path but "/" (the websocket route).
    CORS(
        app,
        resources={re.compile(r"/.+"): {"origins": cors_origins()}},
        methods=["GET", "POST", "OPTIONS"],
        allow_headers="*",
        expose_headers=CORS_EXPOSE_HEADERS,
        max_age=CORS_MAX_AGE,
        supports_credentials=False,
    )

    @app.get("/healthz")
    def healthz() -> Any:
        return jsonify(
            {
                "status": "ok",
                "node": node.hub.node_id,
                "connections": node.hub.connection_count(),
                "sockets": node.sockets.open,
            }
        )

    @app.get("/readyz")
    def readyz() -> Any:
        """Ready for traffic: not shutting down, Redis and MongoDB answer, pushes are subscribed."""
        checks = {"accepting": not node.draining, "push_subscription": node.push_subscribed}
        for name, probe in (("redis", lambda: get_redis().ping()), ("mongodb", mongo.ping)):
            try:
                probe()
                checks[name] = True
            except Exception as exc:
                log.warning("readiness: %s does not answer: %r", name, exc)
                checks[name] = False
        ready = all(checks.values())
        return jsonify({"status": "ready" if ready else "not ready", "checks": checks}), 200 if ready else 503

    @app.get("/metrics")
    def prometheus_metrics() -> Any:
        metrics.CONNECTIONS.set(node.hub.connection_count())
        metrics.ONLINE_USERS.set(node.hub.user_count())
        try:
            for queue, depth in queue_depths().items():
                metrics.QUEUE_DEPTH.labels(queue=queue).set(depth)
        except Exception:
            log.warning("could not read the broker's queue depths", exc_info=True)
        return Response(generate_latest(), mimetype=CONTENT_TYPE_LATEST)

    return app
